// The data path: read, write, zero/trim and block status of one node, between the devices
// (devices.ts) and the chunk store. Per request: the volume's write gate (write-gate.ts) counts
// it in unless a snapshot barrier is up, its range lock (range-lock.ts) holds the chunks it
// touches, chunks go in place or to fresh slots (README.md "Write path"), and the map changes
// become MapRun records for the next commit. It reaches the catalog, the allocator and the
// journal only through the narrow interfaces below, and owns nothing but its `closed` flag.
// Hot paths: no await when the gate is open and the chunks are unlocked, one I/O per run.
// Over 500 lines because each request kind's choice of in place, fresh, partial or merged slots
// and its undo on failure are one rule read in one place (README.md "Write path").
import { ENTRIES_PER_PAGE, isSlot, PAGE_SHIFT, UNMAPPED, ZERO, ZERO_ALLOCATED } from './block-map.ts';
import { readBacking } from './backing.ts';
import type { Node, Volume } from './catalog.ts';
import type { ChunkClass, DataStore } from './chunk-store.ts';
import { appendExtent, StorageError, type Extent, type ZeroOptions } from './device.ts';
import { CrashPoint, type FileIo } from './file-io.ts';
import type { Journal } from './journal.ts';
import { MergeBuffers } from './merge-buffers.ts';
import { allValid, BACKING_BASE, baseIsSlot, blockAligned, CHAIN_DEPTH_MAX, emptyBits, forEachRun, markValid, PARTIAL_SLOTS_MAX, type PartialSlot } from './partial-slots.ts';
import { encodeMapRun, encodeSlotValid, patchSlotValidBits } from './records.ts';
import { runEnd } from './runs.ts';
import { gatherCopy, gatherSlice, type Gather } from '../util/gather.ts';
import { StoreClosedError } from './types.ts';

/** Extents per extents() answer; the NBD client asks again for the rest. */
export const EXTENTS_MAX = 4096;
const ZERO_BUF_LEN = 1024 * 1024;
/** Shared, never handed out for mutation: the source of the zeros a partial chunk is written with. */
const ZEROES = Buffer.alloc(ZERO_BUF_LEN);

/** What the data path needs of the chunk store: slot I/O, read generations, never-mapped slots back. */
export type ChunkIo = Pick<DataStore, 'read' | 'write' | 'writeGather' | 'releaseUnmapped' | 'beginRead' | 'endRead'>;
/** What it needs of the catalog: the epoch new entries are born in; map entries set with the space counters kept (space.ts). */
export interface EpochSource {
  readonly epoch: number;
  setEntry(node: Node, c: number, slot: number, birth: number): void;
}
/** What it needs of the transaction manager: queue map records, commit for FUA and FLUSH. */
export type RecordLog = Pick<Journal, 'log' | 'commit' | 'batch' | 'rewrote' | 'onSwap'>;

/**
 * A partial slot a write makes (`new`, over `base`), adds valid blocks to (`more`) or merged
 * whole (`whole`); applied once the data landed (partial-slots.ts).
 */
interface Validity {
  kind: 'new' | 'more' | 'whole';
  slot: number;
  base: number;
  /** BACKING_BASE: the chunk index in the backing file. */
  at: number;
  inner: number;
  n: number;
}

/** A partial slot's SlotValid record in the journal's batch (DataPath.logValid). */
interface ValidRecord {
  rec: Buffer;
  batch: number;
  slot: number;
  base: number;
  at: number;
  /** Words of the bitmap the record holds (it is rewritten in place: same length only). */
  words: number;
  /** Its bits lag the slot's: sealValid writes them at the swap. */
  stale: boolean;
}

/** A zeroed-tail chunk written but not yet mapped (DataPath.prepareTail). */
export interface TailChunk {
  c: number;
  slot: number;
}

/**
 * Whether [from, the end of its chunk) of `node` can read anything but zeros: a slot (data, or
 * old data a shrink left), or the backing file where the chunk is unmapped over it.
 */
function tailShows(vol: Volume, node: Node, from: number): boolean {
  if (from % vol.chunkSize === 0) return false;
  const s = node.map.slot(Math.floor(from / vol.chunkSize));
  return isSlot(s) || (s === UNMAPPED && vol.backing !== null && from < vol.backing.size);
}

export class DataPath {
  private readonly io: Pick<FileIo, 'point'>;
  private readonly chunks: ChunkIo;
  private readonly catalog: EpochSource;
  private readonly journal: RecordLog;
  /** Whole-chunk buffers of merges, reused once their write landed. */
  private readonly mergeBuffers = new MergeBuffers();
  /**
   * A partial slot's SlotValid record while it waits in the journal's batch: later blocks of the
   * slot rewrite its bits instead of queueing one record per write (applyValidity).
   */
  private readonly validRecords = new WeakMap<PartialSlot, ValidRecord>();
  /** Those whose bits changed since they were written: their bits are written at the swap (sealValid). */
  private staleValid: { r: ValidRecord; p: PartialSlot }[] = [];
  private closed = false;

  constructor(io: Pick<FileIo, 'point'>, chunks: ChunkIo, catalog: EpochSource, journal: RecordLog) {
    this.io = io;
    this.chunks = chunks;
    this.catalog = catalog;
    this.journal = journal;
    journal.onSwap(() => this.sealValid());
  }

  /** Every later request fails with StoreClosedError (ESHUTDOWN to NBD clients). */
  shutDown(): void {
    this.closed = true;
  }

  /** Every write resolved before the call is durable when this resolves. */
  flush(): Promise<void> {
    return this.journal.commit();
  }

  private live(vol: Volume): void {
    if (this.closed) throw new StoreClosedError();
    if (vol.deleted) throw new StorageError('EIO', `volume '${vol.name}' was deleted`);
    if (vol.backingError) throw new StorageError('EIO', vol.backingError.message);
  }

  /** Waits while a barrier is up, then counts the request in (no await between check and count). */
  private async enter(vol: Volume): Promise<void> {
    const gate = vol.gate;
    while (gate.barrier) await gate.barrier;
    this.live(vol);
    gate.enter();
  }

  /**
   * Reads [offset, offset+len) of a node into into[off..]: one I/O per run of contiguous slots.
   * `background`: maintenance reads (IoFile.read), for bulk copies and a write's merge.
   */
  async read(node: Node, offset: number, len: number, into: Buffer, off = 0, background = false): Promise<void> {
    const vol = node.vol;
    this.live(vol);
    if (node.deleted) throw new StorageError('EIO', `snapshot '${vol.name}@${node.name}' was deleted`);
    // The node's own size: a snapshot keeps the one it was taken at (a head's is its volume's).
    if (offset < 0 || len < 0 || offset + len > node.size) throw new StorageError('EINVAL', `read [${offset}, +${len}) past the end (${node.size})`);
    if (len === 0) return;
    const chunks = this.chunks;
    const g = chunks.beginRead();
    try {
      const chunkSize = vol.chunkSize;
      const map = node.map;
      const chunkClass = vol.chunkClass;
      const ios: Promise<void>[] = [];
      // Valid blocks from the slot, the others from its base, which may be partial too: followed
      // down the chain, at most CHAIN_DEPTH_MAX deep (partial-slots.ts).
      const readPartial = (s: number, p: PartialSlot, inner: number, n: number, o: number): void => {
        forEachRun(p.bits, inner, n, (from, to, valid) => {
          const dst = o + from - inner;
          const base = valid ? undefined : baseIsSlot(p.base) ? chunkClass.partials.get(p.base) : undefined;
          if (base) readPartial(p.base, base, from, to - from, dst);
          else if (valid || baseIsSlot(p.base)) ios.push(chunks.read(chunkClass, valid ? s : p.base, from, to - from, into, dst, background));
          else ios.push(readBacking(vol, p.at * chunkSize + from, to - from, into, dst, background)); // zeros past its end
        });
      };
      // Current run: kind 0 none, 1 slots, 2 backing.
      let kind = 0;
      let runSlot = 0;
      let runInner = 0;
      let runPos = 0;
      let runOff = 0;
      let runLen = 0;
      const flushRun = (): void => {
        if (kind === 1) ios.push(chunks.read(chunkClass, runSlot, runInner, runLen, into, runOff, background));
        else if (kind === 2) ios.push(readBacking(vol, runPos, runLen, into, runOff, background));
        kind = 0;
      };
      const end = offset + len;
      let pos = offset;
      while (pos < end) {
        const c = Math.floor(pos / chunkSize);
        const cStart = c * chunkSize;
        const n = Math.min(end, cStart + chunkSize) - pos;
        const s = map.slot(c);
        const o = off + pos - offset;
        const partial = isSlot(s) && chunkClass.partials.size > 0 ? chunkClass.partials.get(s) : undefined;
        if (partial) {
          flushRun();
          readPartial(s, partial, pos - cStart, n, o);
        } else if (isSlot(s)) {
          if (kind === 1 && chunkClass.continuesRun(runSlot, runInner + runLen, s)) {
            runLen += n;
          } else {
            flushRun();
            kind = 1;
            runSlot = s;
            runInner = pos - cStart;
            runOff = o;
            runLen = n;
          }
        } else if (s === UNMAPPED && vol.backing && pos < vol.backing.size) {
          if (kind === 2) runLen += n;
          else {
            flushRun();
            kind = 2;
            runPos = pos;
            runOff = o;
            runLen = n;
          }
        } else {
          flushRun();
          into.fill(0, o, o + n);
        }
        pos += n;
      }
      flushRun();
      if (ios.length === 1) await ios[0];
      else if (ios.length > 1) await Promise.all(ios);
    } finally {
      chunks.endRead(g);
    }
  }

  /** `data`: one buffer, or the pieces of a payload as the socket delivered it (never written to). */
  async write(vol: Volume, offset: number, data: Buffer | Gather, len: number, fua: boolean): Promise<void> {
    if (offset < 0 || offset + len > vol.size) throw new StorageError('ENOSPC', `write [${offset}, +${len}) past the end (${vol.size})`);
    if (len > 0) {
      const gate = vol.gate;
      if (gate.barrier) await this.enter(vol);
      else {
        this.live(vol);
        gate.enter();
      }
      try {
        const first = Math.floor(offset / vol.chunkSize);
        const last = Math.floor((offset + len - 1) / vol.chunkSize);
        const unlock = vol.locks.tryLock(first, last) ?? (await vol.locks.lock(first, last));
        try {
          await this.writeLocked(vol, offset, data, len);
        } finally {
          unlock();
        }
      } finally {
        gate.leave();
      }
    }
    if (fua) await this.journal.commit();
  }

  /** The write path proper; the caller holds the chunk locks. `data` may be shorter-lived than us. */
  private async writeLocked(vol: Volume, offset: number, data: Buffer | Gather, len: number): Promise<void> {
    const chunkSize = vol.chunkSize;
    const chunkClass = vol.chunkClass;
    const map = vol.head.map;
    const epoch = this.catalog.epoch;
    const end = offset + len;
    // Planned I/O runs (`src` null: from `data`); `fresh` are chunks redirected to new slots
    // (mapped after the data lands).
    const runs: { slot: number; inner: number; src: Buffer | null; srcOff: number; len: number }[] = [];
    const fresh: { c: number; slot: number }[] = [];
    const rebirth: number[] = [];
    const merges: Promise<void>[] = [];
    const validity: Validity[] = [];
    const partials = chunkClass.partials;
    const gate = vol.gate;
    // Counted from the choice until the map entries are in: a snapshot shares the map only after.
    let inPlace = false;
    let pos = offset;
    try {
      while (pos < end) {
        const c = Math.floor(pos / chunkSize);
        const cStart = c * chunkSize;
        const inner = pos - cStart;
        const n = Math.min(end, cStart + chunkSize) - pos;
        let slot: number;
        let src: Buffer | null = null;
        let srcOff = pos - offset;
        let ioInner = inner;
        let ioLen = n;
        // Not in place into a segment being compacted: its chunk may be being copied right now.
        const old = map.slot(c);
        const partial = partials.size > 0 && isSlot(old) ? partials.get(old) : undefined;
        let merge = false;
        // Nor while a snapshot create or delete asks writes to redirect (write-gate.ts).
        if (map.exclusive(c) && !chunkClass.isEvacuating(old) && !gate.noInPlace) {
          if (!inPlace) gate.enterInPlace();
          inPlace = true;
          slot = old;
          if (map.birth(c) !== epoch) rebirth.push(c);
          if (partial) {
            // In place into a partial slot: whole blocks become valid; anything else merges the
            // chunk (read through the partial slot) and makes it whole.
            merge = !blockAligned(inner, n);
            validity.push({ kind: merge ? 'whole' : 'more', slot, base: partial.base, at: partial.at, inner, n });
          }
        } else {
          slot = chunkClass.alloc();
          fresh.push({ c, slot });
          // A partial first write over a stable slot, or over the backing file where the chunk is
          // unmapped: only its blocks are written, the rest stays in the old slot or the backing
          // file (the base). No read. The old slot may be partial (a snapshot was taken since its
          // first write): a chain, while shorter than CHAIN_DEPTH_MAX; merging would read the old
          // blocks, which the snapshot's commit may hold locked for writeback (README.md "Partial chunks").
          if (n !== chunkSize && blockAligned(inner, n) && partials.size < PARTIAL_SLOTS_MAX &&
            ((isSlot(old) && !chunkClass.isEvacuating(old) && (!partial || partials.depth(old) < CHAIN_DEPTH_MAX)) ||
              (old === UNMAPPED && vol.backing !== null))) {
            validity.push({ kind: 'new', slot, base: isSlot(old) ? old : BACKING_BASE, at: c, inner, n });
          } else merge = n !== chunkSize;
        }
        if (merge) {
          // Partial chunk: merge with the old content (slot, backing or zeros) into a whole one.
          // Read in libuv's pool (`background`): mostly blocks no client read lately, which on
          // the loop stalled every client behind one disk read (bench/README.md, stop 33).
          const buf = this.mergeBuffers.take(chunkSize);
          const from = pos - offset;
          const tail = vol.size - cStart;
          merges.push(this.read(vol.head, cStart, Math.min(chunkSize, tail), buf, 0, true).then(() => {
            if (tail < chunkSize) buf.fill(0, tail);
            if (Buffer.isBuffer(data)) data.copy(buf, inner, from, from + n);
            else gatherCopy(data, from, n, buf, inner);
          }));
          src = buf;
          srcOff = 0;
          ioInner = 0;
          ioLen = chunkSize;
        }
        const prev = runs[runs.length - 1];
        if (prev && prev.src === null && src === null && prev.srcOff + prev.len === srcOff && ioInner === 0 &&
          chunkClass.continuesRun(prev.slot, prev.inner + prev.len, slot)) {
          prev.len += ioLen;
        } else runs.push({ slot, inner: ioInner, src, srcOff, len: ioLen });
        pos += n;
      }
      if (merges.length > 0) await Promise.all(merges);
      const io = (r: (typeof runs)[number]): Promise<void> => {
        if (r.src !== null) return this.chunks.write(chunkClass, r.slot, r.inner, r.src, r.srcOff, r.len);
        if (Buffer.isBuffer(data)) return this.chunks.write(chunkClass, r.slot, r.inner, data, r.srcOff, r.len);
        return this.chunks.writeGather(chunkClass, r.slot, r.inner, gatherSlice(data, r.srcOff, r.len), r.len);
      };
      if (runs.length === 1) await io(runs[0]!);
      else {
        // All settled before a failure releases the fresh slots: no write may land in a slot
        // that another write was given meanwhile.
        const done = await Promise.allSettled(runs.map(io));
        for (const d of done) if (d.status === 'rejected') throw d.reason;
      }
      this.io.point(CrashPoint.DataWritten);
      // Every read and write of the merge buffers has settled. (Not on failure: a merge read
      // may still be filling one after another merge failed.)
      if (merges.length > 0) for (const r of runs) if (r.src !== null) this.mergeBuffers.give(r.src);
    } catch (e) {
      this.chunks.releaseUnmapped(chunkClass, fresh.map((f) => f.slot)); // never mapped: free at once
      if (inPlace) gate.leaveInPlace();
      throw e;
    }
    try {
      this.mapWritten(vol, fresh, rebirth, validity);
    } finally {
      if (inPlace) gate.leaveInPlace();
    }
  }

  /** After a write's data landed: its partial slots, fresh slots and rebirths go into the head's map. */
  private mapWritten(vol: Volume, fresh: { c: number; slot: number }[], rebirth: number[], validity: Validity[]): void {
    const chunkClass = vol.chunkClass;
    const map = vol.head.map;
    if (vol.deleted) {
      this.chunks.releaseUnmapped(chunkClass, fresh.map((f) => f.slot));
      return;
    }
    // The data is in place: now map it (records go to the next commit). Partial slots first, so
    // a base never drops to no reference between its page entry and the partial slot's hold.
    if (validity.length > 0) this.applyValidity(chunkClass, validity);
    if (fresh.length > 0) {
      const ep = this.catalog.epoch;
      for (const f of fresh) this.catalog.setEntry(vol.head, f.c, f.slot, ep);
      this.logEntries(vol.head, fresh.map((f) => f.c));
    }
    if (rebirth.length > 0) {
      const ep = this.catalog.epoch;
      for (const c of rebirth) this.catalog.setEntry(vol.head, c, map.slot(c), ep);
      this.logEntries(vol.head, rebirth);
    }
  }

  /**
   * Zeros [from, the end of its chunk) of the head, the part of the chunk past the volume's end
   * `from`, before a grow (the caller holds the gate): it may hold the backing file's bytes or,
   * after a shrink, old data. One chunk write, none when the chunk reads zeros there already.
   * Invisible at the current size, so it may commit alone, before the Resize record.
   */
  async zeroTailHeld(vol: Volume, from: number): Promise<void> {
    this.live(vol);
    if (!tailShows(vol, vol.head, from)) return;
    await this.writeLocked(vol, from, ZEROES, vol.chunkSize - from % vol.chunkSize);
  }

  /**
   * For a rollback onto a snapshot from before a grow (the caller holds the gate): the snapshot's
   * last chunk with zeros past its end, written to a fresh slot that nothing maps yet; null when
   * that chunk reads zeros there already. The caller maps it with `mapTail` in the same
   * synchronous step that logs the Rollback record, so one commit takes both: a commit between
   * them would make the rollback durable with the backing file's bytes (or old data) showing
   * past the snapshot's end.
   */
  async prepareTail(snap: Node): Promise<TailChunk | null> {
    const vol = snap.vol;
    this.live(vol);
    if (!tailShows(vol, snap, snap.size)) return null;
    const chunkSize = vol.chunkSize;
    const c = Math.floor(snap.size / chunkSize);
    const buf = Buffer.alloc(chunkSize);
    await this.read(snap, c * chunkSize, snap.size - c * chunkSize, buf, 0);
    const slot = vol.chunkClass.alloc();
    try {
      await this.chunks.write(vol.chunkClass, slot, 0, buf, 0, chunkSize);
      this.io.point(CrashPoint.DataWritten);
    } catch (e) {
      this.chunks.releaseUnmapped(vol.chunkClass, [slot]);
      throw e;
    }
    return { c, slot };
  }

  /** Maps a chunk from `prepareTail` into the head (synchronous: its record joins the caller's). */
  mapTail(vol: Volume, tail: TailChunk): void {
    this.catalog.setEntry(vol.head, tail.c, tail.slot, this.catalog.epoch);
    this.logEntries(vol.head, [tail.c]);
  }

  /**
   * The whole unmapped chunks of [from, to) that lie over the backing file read zeros from now
   * on (ZERO entries, no data): the grown part of a volume. Synchronous, so its records join
   * the Resize or Rollback record logged just before in one commit.
   */
  zeroOverBacking(vol: Volume, from: number, to: number): void {
    const backingEnd = Math.min(to, vol.backing ? vol.backing.size : 0);
    const chunkSize = vol.chunkSize;
    const map = vol.head.map;
    const changed: number[] = [];
    for (let c = Math.ceil(from / chunkSize); c * chunkSize < backingEnd; c++) {
      if (map.slot(c) !== UNMAPPED) continue;
      this.catalog.setEntry(vol.head, c, ZERO, this.catalog.epoch); // through the space counters
      changed.push(c);
    }
    if (changed.length > 0) this.logEntries(vol.head, changed);
  }

  /** Records the partial slots a write made or filled (partial-slots.ts) and queues their records. */
  private applyValidity(cls: ChunkClass, validity: Validity[]): void {
    const partials = cls.partials;
    const cs = cls.chunkSize;
    for (const v of validity) {
      const p = partials.get(v.slot);
      if (v.kind === 'new') {
        const bits = emptyBits(cs);
        markValid(bits, v.inner, v.n);
        partials.set(v.slot, v.base, bits, v.at);
        this.logValid(cs, v.slot, partials.get(v.slot)!);
      } else if (!p) {
        continue; // cannot happen: the chunk lock kept the slot partial
      } else if (v.kind !== 'whole' && !markValid(p.bits, v.inner, v.n)) {
        continue; // blocks valid already rewritten: nothing to record
      } else if (v.kind === 'whole' || allValid(p.bits, cs)) {
        partials.clear(v.slot);
        this.journal.log(encodeSlotValid(cs, v.slot, UNMAPPED, null));
      } else this.logValid(cs, v.slot, p);
    }
  }

  /**
   * Queues a partial slot's SlotValid record, or gives the one it still has in the journal's
   * batch its new bits: a batch commits whole, so only its end state counts. After a snapshot
   * ~90% of random 4 KiB writes land in a slot already partial; each queued a record that lived
   * until the next commit (bench/README.md, "Cold random writes after a snapshot").
   */
  private logValid(cs: number, slot: number, p: PartialSlot): void {
    const batch = this.journal.batch;
    const r = this.validRecords.get(p);
    if (r && r.batch === batch && r.slot === slot && r.base === p.base && r.at === p.at && r.words === p.bits.length) {
      // Its bits (and crc) are written once, at the swap, not per write (bench/README.md,
      // "Cold random writes after a snapshot: where the CPU goes").
      if (!r.stale) {
        r.stale = true;
        this.staleValid.push({ r, p });
      }
      this.journal.rewrote(r.rec);
      return;
    }
    const rec = encodeSlotValid(cs, slot, p.base, p.bits, p.at);
    this.journal.log(rec);
    this.validRecords.set(p, { rec, batch, slot, base: p.base, at: p.at, words: p.bits.length, stale: false });
  }

  /**
   * At the commit's swap: the SlotValid records rewritten since they were queued get their
   * slot's bits now, the state the batch commits (the data of every block set is written, so
   * the commit's data sync covers it). A slot completed or freed meanwhile keeps its last bits
   * here and the record that cleared it follows in the batch, as before.
   */
  private sealValid(): void {
    const stale = this.staleValid;
    if (stale.length === 0) return;
    this.staleValid = [];
    for (const { r, p } of stale) {
      r.stale = false;
      patchSlotValidBits(r.rec, p.bits);
    }
  }

  /** Queues MapRun records for chunks of a node (sorted, grouped into runs). */
  private logEntries(node: Node, chunks: number[]): void {
    for (let i = 0; i < chunks.length; ) {
      const j = runEnd(chunks, i);
      this.journal.log(encodeMapRun(node.id, chunks[i] as number, j - i, node.map));
      i = j;
    }
  }

  /**
   * TRIM (`noHole` false) and WRITE_ZEROES: whole chunks are remapped to UNMAPPED, ZERO (where the
   * backing file would show through) or ZERO_ALLOCATED (`noHole`); partial ends are written with
   * zeros. So FAST_ZERO always holds: zeroing is never slower than writing.
   */
  async zeroRange(vol: Volume, offset: number, len: number, opts: ZeroOptions): Promise<void> {
    if (offset < 0 || offset + len > vol.size) throw new StorageError('ENOSPC', `zero [${offset}, +${len}) past the end (${vol.size})`);
    if (len > 0) {
      await this.enter(vol);
      try {
        const chunkSize = vol.chunkSize;
        const first = Math.floor(offset / chunkSize);
        const last = Math.floor((offset + len - 1) / chunkSize);
        const unlock = vol.locks.tryLock(first, last) ?? (await vol.locks.lock(first, last));
        try {
          const end = offset + len;
          const changed: number[] = [];
          const map = vol.head.map;
          const backingSize = vol.backing ? vol.backing.size : 0;
          let pos = offset;
          try {
            while (pos < end) {
              const c = Math.floor(pos / chunkSize);
              const cStart = c * chunkSize;
              const n = Math.min(end, cStart + chunkSize) - pos;
              const wholeChunk = pos === cStart && (n === chunkSize || cStart + n === vol.size);
              if (!wholeChunk) {
                await this.writeLocked(vol, pos, ZEROES, n);
              } else {
                // NO_HOLE: zeros that block status reports as data-allocated, still without data.
                const target = opts.noHole ? ZERO_ALLOCATED : cStart < backingSize ? ZERO : UNMAPPED;
                if (map.slot(c) !== target) {
                  this.catalog.setEntry(vol.head, c, target, this.catalog.epoch);
                  changed.push(c);
                }
              }
              pos += n;
            }
          } finally {
            // Also when the partial tail failed (ENOSPC): the chunks already remapped must reach
            // the journal, or memory and the committed store would disagree after a reopen.
            if (changed.length > 0) this.logEntries(vol.head, changed);
          }
        } finally {
          unlock();
        }
      } finally {
        vol.gate.leave();
      }
    }
    if (opts.fua) await this.journal.commit();
  }

  /** Block status of [offset, offset+len): at most EXTENTS_MAX extents, merged. */
  async extents(node: Node, offset: number, len: number): Promise<Extent[]> {
    const vol = node.vol;
    this.live(vol);
    if (offset < 0 || len <= 0 || offset + len > node.size) throw new StorageError('EINVAL', `extents [${offset}, +${len}) out of range`);
    const chunkSize = vol.chunkSize;
    const backingSize = vol.backing ? vol.backing.size : 0;
    const out: Extent[] = [];
    const push = (n: number, hole: boolean, zero: boolean): void => appendExtent(out, n, hole, zero);
    const pages = node.map.l1.pages;
    const end = offset + len;
    let pos = offset;
    while (pos < end && out.length < EXTENTS_MAX) {
      const c = Math.floor(pos / chunkSize);
      const page = pages[c >>> PAGE_SHIFT];
      // A missing page: ENTRIES_PER_PAGE unmapped chunks in one step.
      const stepEnd = page ? Math.min(end, (c + 1) * chunkSize) : Math.min(end, ((c >>> PAGE_SHIFT) + 1) * ENTRIES_PER_PAGE * chunkSize);
      const s = page ? page.at((c & (ENTRIES_PER_PAGE - 1)) * 2) : UNMAPPED;
      if (isSlot(s)) push(stepEnd - pos, false, false);
      else if (s === ZERO) push(stepEnd - pos, true, true);
      else if (s === ZERO_ALLOCATED) push(stepEnd - pos, false, true);
      else if (pos >= backingSize) push(stepEnd - pos, true, true);
      else if (stepEnd <= backingSize) push(stepEnd - pos, true, false);
      else {
        push(backingSize - pos, true, false);
        push(stepEnd - backingSize, true, true);
      }
      pos = stepEnd;
    }
    return out;
  }
}
