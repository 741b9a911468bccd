// The data side of the store: chunks live in slots of segment files, one set of segments per
// chunk size ("class"; a clone inherits its origin's chunk size, so shared slots are always in one
// class). Node cannot punch holes, so space goes back to the file system by deleting a segment
// once its last slot is free (and the compactor empties sparse segments, see compactor.ts).
//
// Slot life: free → allocated (state 1, refs 0) → mapped (refs > 0) → refs drop to 0: pending
// free (still state 1) → the commit that records the unmapping lands: quarantined until every
// read that began before it has finished → free. So a freed slot is never reused, nor its
// segment deleted, before the free is durable and nobody can be reading it.
//
// Over 500 lines because the allocator (ChunkClass: refcounts, pins, slot states, segments) and
// the slot I/O (DataStore) share every slot table; split apart, each would reach into the other's.
import { StorageError } from './device.ts';
import type { FileIo, IoFile } from './file-io.ts';
import type { Gather } from '../util/gather.ts';
import type { SlotRefs } from './block-map.ts';
import { SLOT_MAX } from './block-map.ts';
import { baseIsSlot, PartialSlots } from './partial-slots.ts';
import { GROWTH_WRITE_PIECE_BYTES, writeGrowing } from './growth-writes.ts';

export const SEGMENT_BYTES_DEFAULT = 64 * 1024 * 1024;
/**
 * Free space kept back from data writes that grow a segment file, for the metadata (journal
 * appends, a checkpoint): a full disk must never block the commit that frees space (a snapshot
 * delete). The engine adds what its journal and checkpoint may still need (metadataReserve).
 */
export const METADATA_RESERVE_MIN_BYTES = 4 * 1024 * 1024;
const INITIAL_SLOTS = 1024;

export function segmentFile(log2: number, seg: number): string {
  return `seg-${log2.toString().padStart(2, '0')}-${seg.toString().padStart(6, '0')}.dat`;
}

export const SEGMENT_FILE_RE = /^seg-(\d\d)-(\d{6})\.dat$/;

export class Segment {
  readonly path: string;
  file: IoFile | null = null;
  /** The file's size as last seen or grown to by us (-1: not known yet); see DataStore.write. */
  knownSize = -1;
  opening: Promise<IoFile> | null = null;
  constructor(path: string) {
    this.path = path;
  }
}

/** A slot's reference byte at this value: its count is in ChunkClass.bigRefs. */
export const REFS_BIG = 0xff;

export class ChunkClass implements SlotRefs {
  readonly chunkSize: number;
  readonly log2: number;
  readonly slotsPerSeg: number;
  /**
   * References per slot, one byte each: counts of REFS_BIG and more live in `bigRefs` (the byte
   * holds REFS_BIG). Most slots are held by a page or two, and four bytes a slot were 64 MiB per
   * TiB of 64 KiB chunks (bench/README.md, "Patch pages").
   */
  refs = new Uint8Array(INITIAL_SLOTS);
  private readonly bigRefs = new Map<number, number>();
  /** 0 free, 1 in use (allocated, mapped, pending free or quarantined). */
  state = new Uint8Array(INITIAL_SLOTS);
  /** In-use slots per segment. */
  segUse = new Uint32Array(Math.ceil(INITIAL_SLOTS / 1) + 1);
  /** Segments whose file is being deleted: no allocation there until it is gone. */
  readonly deleting = new Set<number>();
  /**
   * Segments the compactor is emptying (compactor.ts, Compactor.move): no allocation there, and no
   * write goes in place into their slots (it redirects), so a slot's content cannot change while
   * it is copied. Cleared when the file is deleted or the compaction gives up.
   */
  readonly evacuating = new Set<number>();
  /**
   * Segments whose file is being truncated, with the first slot the cut gives back: only the
   * slots below it are allocated meanwhile (segment-reclaim.ts).
   */
  readonly cutting = new Map<number, number>();
  readonly segments = new Map<number, Segment>();
  /** Slots whose refs fell to 0 since the last commit swap. */
  pendingFree: number[] = [];
  /** Slots holding only some blocks of their chunk, the rest read from a base slot (partial-slots.ts). */
  readonly partials = new PartialSlots(this);
  /** Slot -> references operations hold on it (pin/unpin), left out of `holders`. */
  private readonly pins = new Map<number, number>();
  private hint = 0;
  private readonly owner: DataStore;

  constructor(owner: DataStore, chunkSize: number) {
    this.owner = owner;
    this.chunkSize = chunkSize;
    this.log2 = Math.log2(chunkSize);
    this.slotsPerSeg = Math.max(1, Math.floor(owner.segmentBytes / chunkSize));
  }

  private growTo(n: number, exact = false): void {
    if (n <= this.refs.length) return;
    let len = this.refs.length;
    while (len < n) len *= 2;
    if (exact) len = n;
    if (len > SLOT_MAX) throw new StorageError('ENOSPC', 'slot space exhausted');
    const r = new Uint8Array(len);
    r.set(this.refs);
    this.refs = r;
    const s = new Uint8Array(len);
    s.set(this.state);
    this.state = s;
    const segs = Math.ceil(len / this.slotsPerSeg) + 1;
    if (segs > this.segUse.length) {
      const u = new Uint32Array(segs);
      u.set(this.segUse);
      this.segUse = u;
    }
  }

  /**
   * Sizes the slot tables for `n` slots at once (recovery, from the checkpoint's size): grown
   * by doubling while a big map loads, each step would leave the previous tables (80 MiB at
   * 16 M slots) to the garbage collector, and a store filled to a power of two would double
   * again at its first new slot. Untouched table pages cost no memory.
   */
  reserve(n: number): void {
    this.growTo(Math.min(Math.ceil(n), SLOT_MAX), true);
  }

  ref(slot: number): void {
    this.growTo(slot + 1);
    const r = this.refs[slot] as number;
    if (r < REFS_BIG - 1) this.refs[slot] = r + 1;
    else if (r === REFS_BIG - 1) {
      this.refs[slot] = REFS_BIG;
      this.bigRefs.set(slot, REFS_BIG);
    } else this.bigRefs.set(slot, (this.bigRefs.get(slot) as number) + 1);
  }

  unref(slot: number): void {
    const r = this.refs[slot] as number;
    const n = (r === REFS_BIG ? (this.bigRefs.get(slot) as number) : r) - 1;
    if (n < 0) throw new Error(`slot ${slot} unref below zero`);
    if (r !== REFS_BIG) this.refs[slot] = n;
    else if (n > REFS_BIG - 1) this.bigRefs.set(slot, n);
    else {
      this.bigRefs.delete(slot);
      this.refs[slot] = n;
    }
    if (n === 0) {
      this.pendingFree.push(slot);
      // Freed while partial: its base loses the reference (replay does the same, so no record).
      if (this.partials.size > 0) this.partials.clear(slot);
    }
  }

  count(slot: number): number {
    if (slot >= this.refs.length) return 0;
    const r = this.refs[slot] as number;
    return r === REFS_BIG ? (this.bigRefs.get(slot) as number) : r;
  }

  /**
   * References from map pages only (a partial slot's hold on its base left out): the space
   * figures' notion of who holds a slot. A base only partial slots hold besides one node is that
   * node's `used`: deleting it leaves the base to the compactor's merge, which frees it.
   */
  holders(slot: number): number {
    const pinned = this.pins.size > 0 ? (this.pins.get(slot) ?? 0) : 0;
    return this.count(slot) - this.partials.holdsOn(slot) - pinned;
  }

  /**
   * The slots that are free in the records' state though pins keep them: pins are no records,
   * so replay frees a slot at the record that let go of it last. That is a pinned slot nothing
   * else holds (a client write redirected past the merge's pin, partial-merge.ts), and down its
   * chain each base that such slots alone hold, pins aside. No SlotValid record may name one of
   * them (neither a merge's nor a checkpoint's): replay would bring it back partial, in no map,
   * holding a reference on its base. O(pins × chain depth).
   */
  freedButPinned(): Set<number> {
    const freed = new Set<number>();
    if (this.pins.size === 0) return freed;
    const lost = new Map<number, number>(); // base -> holds on it from freed partial slots
    for (const [pinned, n] of this.pins) {
      if (this.count(pinned) !== n) continue;
      for (let s = pinned; !freed.has(s); ) {
        freed.add(s);
        const p = this.partials.get(s);
        if (!p || !baseIsSlot(p.base)) break;
        const b = p.base;
        const holds = (lost.get(b) ?? 0) + 1;
        lost.set(b, holds);
        if (this.count(b) - (this.pins.get(b) ?? 0) !== holds) break;
        s = b;
      }
    }
    return freed;
  }

  /**
   * A reference an operation holds for a while (partial-merge.ts), not a map: it keeps the slot
   * alive and makes a write to it redirect, but is no holder, so a node that lets go of the slot
   * meanwhile still loses it from its `used` (space.ts).
   */
  pin(slot: number): void {
    this.ref(slot);
    this.pins.set(slot, (this.pins.get(slot) ?? 0) + 1);
  }

  unpin(slot: number): void {
    const n = (this.pins.get(slot) ?? 0) - 1;
    if (n < 0) throw new Error(`slot ${slot} unpinned but not pinned`);
    if (n === 0) this.pins.delete(slot);
    else this.pins.set(slot, n);
    this.unref(slot);
  }

  /** Takes the lowest free slot (keeps data packed into low segments). */
  alloc(): number {
    let i = this.hint;
    const sps = this.slotsPerSeg;
    for (;;) {
      this.growTo(i + 1);
      const seg = Math.floor(i / sps);
      if (this.deleting.has(seg) || this.evacuating.has(seg) || (this.segUse[seg] as number) >= sps) {
        i = (seg + 1) * sps;
        continue;
      }
      const cut = this.cutting.size > 0 ? (this.cutting.get(seg) ?? (seg + 1) * sps) : (seg + 1) * sps;
      const end = Math.min(cut, this.state.length);
      const st = this.state;
      while (i < end && st[i] !== 0) i++;
      if (i < end) {
        st[i] = 1;
        this.segUse[seg] = (this.segUse[seg] as number) + 1;
        this.hint = i + 1;
        return i;
      }
      if (i >= cut) i = (seg + 1) * sps; // the rest of a segment being cut: the next one
    }
  }

  /** Returns slots to the free pool (after their free committed, or never-mapped allocations). */
  release(slot: number): number {
    if (this.state[slot] !== 1) throw new Error(`release of free slot ${slot}`);
    this.state[slot] = 0;
    const seg = Math.floor(slot / this.slotsPerSeg);
    this.segUse[seg] = (this.segUse[seg] as number) - 1;
    if (slot < this.hint) this.hint = slot;
    return seg;
  }

  /** After open: state and per-segment use derived from the reference counts. */
  deriveState(): void {
    this.segUse.fill(0);
    const st = this.state;
    for (let i = 0; i < this.refs.length; i++) {
      // Written only where needed: the reserved tail's pages stay untouched (no memory).
      if (st[i] !== 0) st[i] = 0;
      if ((this.refs[i] as number) > 0) {
        st[i] = 1;
        const seg = Math.floor(i / this.slotsPerSeg);
        this.segUse[seg] = (this.segUse[seg] as number) + 1;
      }
    }
    this.pendingFree = [];
    this.hint = 0;
  }

  /** Slots in use among [from, to) (all by default). */
  liveSlots(from = 0, to = this.refs.length): number {
    let n = 0;
    for (let i = from; i < to; i++) if ((this.refs[i] as number) > 0) n++;
    return n;
  }

  /** Byte length a segment's file needs: the end of its last in-use slot (0 when empty). */
  usedEnd(seg: number): number {
    const first = seg * this.slotsPerSeg;
    for (let i = Math.min(first + this.slotsPerSeg, this.state.length) - 1; i >= first; i--) {
      if (this.state[i] !== 0) return (i - first + 1) * this.chunkSize;
    }
    return 0;
  }

  /** True when `slot` lies in a segment being evacuated (writes must not go in place there). */
  isEvacuating(slot: number): boolean {
    return this.evacuating.size > 0 && this.evacuating.has(Math.floor(slot / this.slotsPerSeg));
  }

  /**
   * Whether byte 0 of `slot` continues, in the same segment file, a run of I/O that ends
   * `runEndBytes` after the start of slot `runSlot`: then one read or write covers both.
   */
  continuesRun(runSlot: number, runEndBytes: number, slot: number): boolean {
    return runEndBytes % this.chunkSize === 0 && runSlot + runEndBytes / this.chunkSize === slot && this.segmentOf(slot) === this.segmentOf(runSlot);
  }

  segmentOf(slot: number): number {
    return Math.floor(slot / this.slotsPerSeg);
  }

  posOf(slot: number): number {
    return (slot % this.slotsPerSeg) * this.chunkSize;
  }

  resetHint(seg: number): void {
    const s = seg * this.slotsPerSeg;
    if (s < this.hint) this.hint = s;
  }

  segment(seg: number): Segment {
    let s = this.segments.get(seg);
    if (!s) {
      s = new Segment(`${this.owner.dir}/${segmentFile(this.log2, seg)}`);
      this.segments.set(seg, s);
    }
    return s;
  }
}

export class DataStore {
  readonly io: FileIo;
  readonly dir: string;
  readonly segmentBytes: number;
  readonly classes = new Map<number, ChunkClass>();
  /** Segments written since the last commit swap: fdatasync'ed before the metadata. */
  dirty = new Set<Segment>();
  /** A segment file was created since the last commit: sync the directory too. */
  dirDirty = false;
  /**
   * Segment deletions and truncations still running, or null (set by the engine): a write that
   * would grow a file past the reserve waits for them, since they give space back.
   */
  reclaimPending: () => Promise<void> | null = () => null;
  /** Bytes data writes must leave free on the file system (set by the engine). */
  metadataReserve: () => number = () => METADATA_RESERVE_MIN_BYTES;
  /** The last write that needed more room was refused for the reserve (stats say full). */
  full = false;
  /** Free bytes at the last statfs, less what writes grew files by since (an underestimate). */
  private freeEstimate = -Infinity;

  // Read generations: slots freed by a commit are reused only once every read that began before
  // that commit has finished (a read looks its slots up synchronously when it starts).
  private readGen = 0;
  private readonly readsByGen = new Map<number, number>();
  private readonly quarantine: { gen: number; chunkClass: ChunkClass; slots: number[] }[] = [];
  /** Called with segments that became empty (their file can go). */
  onEmptySegment: ((cls: ChunkClass, seg: number) => void) | null = null;
  /** Called with segments that lost slots but are not empty (their tail may be truncated). */
  onShrunkSegment: ((cls: ChunkClass, seg: number) => void) | null = null;

  constructor(io: FileIo, dir: string, segmentBytes: number) {
    this.io = io;
    this.dir = dir;
    this.segmentBytes = segmentBytes;
  }

  classOf(chunkSize: number): ChunkClass {
    const log2 = Math.log2(chunkSize);
    let c = this.classes.get(log2);
    if (!c) {
      c = new ChunkClass(this, chunkSize);
      this.classes.set(log2, c);
    }
    return c;
  }

  beginRead(): number {
    const g = this.readGen;
    this.readsByGen.set(g, (this.readsByGen.get(g) ?? 0) + 1);
    return g;
  }

  endRead(g: number): void {
    const n = (this.readsByGen.get(g) ?? 1) - 1;
    if (n === 0) {
      this.readsByGen.delete(g);
      if (this.quarantine.length > 0) this.releaseQuarantine();
    } else this.readsByGen.set(g, n);
  }

  /** Takes the segments written (and whether a file was created) since the last swap (at the commit swap). */
  takeDirty(): { segments: Set<Segment>; dir: boolean } {
    const taken = { segments: this.dirty, dir: this.dirDirty };
    this.dirty = new Set<Segment>();
    this.dirDirty = false;
    return taken;
  }

  /** A failed commit: its dirty segments are dirty again (not those deleted meanwhile). */
  restoreDirty(taken: { segments: Set<Segment>; dir: boolean }): void {
    for (const s of taken.segments) if (s.file) this.dirty.add(s);
    if (taken.dir) this.dirDirty = true;
  }

  /** Takes every class's pending frees (at the commit swap). */
  takePendingFrees(): { chunkClass: ChunkClass; slots: number[] }[] {
    const out: { chunkClass: ChunkClass; slots: number[] }[] = [];
    for (const c of this.classes.values()) {
      if (c.pendingFree.length === 0) continue;
      out.push({ chunkClass: c, slots: c.pendingFree });
      c.pendingFree = [];
    }
    return out;
  }

  /** A failed commit: the frees go back to pending. */
  restorePendingFrees(frees: { chunkClass: ChunkClass; slots: number[] }[]): void {
    for (const f of frees) f.chunkClass.pendingFree = f.slots.concat(f.chunkClass.pendingFree);
  }

  /** The commit holding these frees is durable. */
  committedFrees(frees: { chunkClass: ChunkClass; slots: number[] }[]): void {
    // Freed slots take writes without growing a file: not full now; look at statfs afresh.
    if (frees.length > 0 && this.full) {
      this.full = false;
      this.freeEstimate = -Infinity;
    }
    const gen = this.readGen++;
    for (const f of frees) this.quarantine.push({ gen, chunkClass: f.chunkClass, slots: f.slots });
    this.releaseQuarantine();
  }

  /** Slots allocated but never mapped (a failed write): free at once, nothing committed saw them. */
  releaseUnmapped(cls: ChunkClass, slots: number[]): void {
    const touched = new Set<number>();
    for (const s of slots) touched.add(cls.release(s));
    for (const seg of touched) {
      if (cls.segUse[seg] === 0) this.onEmptySegment?.(cls, seg);
      else this.onShrunkSegment?.(cls, seg);
    }
  }

  private releaseQuarantine(): void {
    let oldest = Infinity;
    for (const g of this.readsByGen.keys()) if (g < oldest) oldest = g;
    while (this.quarantine.length > 0) {
      const q = this.quarantine[0]!;
      if (q.gen >= oldest) break;
      this.quarantine.shift();
      const touched = new Set<number>();
      for (const s of q.slots) {
        // A slot can be re-referenced only after release, so refs must still be 0 here.
        if (q.chunkClass.count(s) !== 0) continue;
        touched.add(q.chunkClass.release(s));
      }
      for (const seg of touched) {
        if (q.chunkClass.segUse[seg] === 0) this.onEmptySegment?.(q.chunkClass, seg);
        else this.onShrunkSegment?.(q.chunkClass, seg);
      }
    }
  }

  async file(cls: ChunkClass, seg: number, create: boolean): Promise<IoFile> {
    const s = cls.segment(seg);
    if (s.file) return s.file;
    if (!s.opening) {
      s.opening = (async () => {
        const exists = (await this.io.stat(s.path)) !== null;
        if (!exists && !create) throw new StorageError('EIO', `segment file ${s.path} is missing`);
        const f = await this.io.open(s.path, 'create');
        if (!exists) {
          this.dirDirty = true;
          // Just made, so empty: the writes that meet it growing need no fstat each (grow).
          if (s.knownSize < 0) s.knownSize = 0;
        }
        s.file = f;
        return f;
      })();
      s.opening.catch(() => {
        s.opening = null;
      });
    }
    return s.opening;
  }

  /**
   * Reads `len` bytes at byte `inner` of a run of consecutive slots (one segment) into into[off..].
   * `background`: maintenance I/O (compaction, merges, bulk copies of a snapshot; IoFile.read).
   */
  async read(cls: ChunkClass, slot: number, inner: number, len: number, into: Buffer, off: number, background = false): Promise<void> {
    const f = await this.file(cls, cls.segmentOf(slot), false);
    const n = await f.read(into, off, len, cls.posOf(slot) + inner, background);
    if (n < len) into.fill(0, off + n, off + len); // a slot past the file's end was never written
  }

  /** `background`: compaction and merges (IoFile.write). */
  async write(cls: ChunkClass, slot: number, inner: number, data: Buffer, off: number, len: number, background = false): Promise<void> {
    const s = cls.segment(cls.segmentOf(slot));
    const f = s.file ?? (await this.file(cls, cls.segmentOf(slot), true));
    const pos = cls.posOf(slot) + inner;
    if (pos + len > s.knownSize && !this.growFast(s, pos + len)) await this.grow(s, f, pos + len);
    // A large write past the file's end goes in pieces (growth-writes.ts).
    if (len > GROWTH_WRITE_PIECE_BYTES && pos + len > s.knownSize) await writeGrowing(f, [data.subarray(off, off + len)], len, pos, true, background);
    else await f.write(data, off, len, pos, background);
    // Dirty once written: a commit that swapped the dirty set while the write was in flight
    // may have synced the file before the data landed, and the write's map record goes to a
    // later commit, which must sync it again.
    this.dirty.add(s);
    if (pos + len > s.knownSize) s.knownSize = pos + len;
  }

  /** `write` of bytes in pieces (`len` in all, views never written to): one pwritev (past the file's end: growth-writes.ts), no copy. */
  async writeGather(cls: ChunkClass, slot: number, inner: number, pieces: Gather, len: number): Promise<void> {
    if (pieces.length === 1) return this.write(cls, slot, inner, pieces[0]!, 0, len);
    const s = cls.segment(cls.segmentOf(slot));
    const f = s.file ?? (await this.file(cls, cls.segmentOf(slot), true));
    const pos = cls.posOf(slot) + inner;
    if (pos + len > s.knownSize && !this.growFast(s, pos + len)) await this.grow(s, f, pos + len);
    await writeGrowing(f, pieces, len, pos, pos + len > s.knownSize);
    this.dirty.add(s); // once written: see write()
    if (pos + len > s.knownSize) s.knownSize = pos + len;
  }

  /**
   * `grow` without an await when the size is known and the estimate leaves the reserve whole (the
   * common case: a sequence of writes growing a segment paid a promise each). False: call `grow`.
   */
  private growFast(s: Segment, end: number): boolean {
    return s.knownSize >= 0 && this.claim(end - s.knownSize);
  }

  /** A write will end at `end`, past the segment file's known size: learn the size, claim the room. */
  private async grow(s: Segment, f: IoFile, end: number): Promise<void> {
    if (s.knownSize < 0) s.knownSize = await f.size();
    if (end > s.knownSize) await this.takeRoom(end - s.knownSize);
  }

  /** Takes `bytes` from the running free-space estimate if that leaves the metadata reserve whole. */
  private claim(bytes: number): boolean {
    if (this.freeEstimate - bytes < this.metadataReserve()) return false;
    this.freeEstimate -= bytes;
    this.full = false;
    return true;
  }

  /**
   * Claims `bytes` of file growth, or fails ENOSPC when that would eat into the metadata reserve.
   * statfs only when the running estimate says the reserve is near (or full was said before).
   */
  private async takeRoom(bytes: number): Promise<void> {
    if (this.claim(bytes)) return;
    this.freeEstimate = await this.io.freeBytes(this.dir);
    if (this.claim(bytes)) return;
    const reclaim = this.reclaimPending();
    if (reclaim) {
      // A freeing commit's files are still being cut or unlinked: their space is not free yet.
      await reclaim;
      this.freeEstimate = await this.io.freeBytes(this.dir);
      if (this.claim(bytes)) return;
    }
    this.full = true;
    throw new StorageError('ENOSPC', `no space left for data: ${this.freeEstimate} bytes free in ${this.dir}, ` +
      `${this.metadataReserve()} kept for the store's metadata`);
  }

  /** Free bytes on the data dir's file system as last seen (stats). */
  get lastFreeBytes(): number {
    return Math.max(0, this.freeEstimate);
  }

  async closeAll(): Promise<void> {
    for (const c of this.classes.values()) {
      for (const s of c.segments.values()) {
        const f = s.file;
        s.file = null;
        s.opening = null;
        if (f) await f.close().catch(() => undefined);
      }
    }
  }
}
