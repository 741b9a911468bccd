// The data compactor's executor and its schedule (README.md "Compactor"): a pass asks the planner
// (compact-plan.ts) which segments to empty, copies their live chunks into free slots below with
// the same allocator and chunk I/O as writes, switches the maps in one synchronous step, and
// makes the switch durable with a checkpoint through the transaction manager (journal.ts).
// Passes run as control operations (`serial`), never two at once. It owns only its schedule.
import { beforePageChange, type L1, type Page } from './block-map.ts';
import type { Catalog } from './catalog.ts';
import { segmentFile, type ChunkClass, type DataStore } from './chunk-store.ts';
import { NO_COPY, planPass, remapEntries, type ClassUsage } from './compact-plan.ts';
import { CrashPoint, type FileIo } from './file-io.ts';
import type { Journal } from './journal.ts';
import { mergeOrphanedPartials } from './partial-merge.ts';
import type { LogFn } from './recovery.ts';
import { runEnd } from './runs.ts';
import type { SegmentReclaimer } from './segment-reclaim.ts';
import { holdAll } from './write-gate.ts';

/** After a commit freed slots the background compactor looks this much later (frees come in bursts). */
export const COMPACT_DELAY_MS = 1000;
/** Back-to-back background passes take at most this share of the time (a pass of t ms waits 3t). */
export const COMPACT_DUTY_MAX = 0.25;
/** Live chunks are copied this many bytes at a time: bounded memory, client I/O interleaves. */
export const COMPACT_BATCH_BYTES = 4 * 1024 * 1024;
/** Free space a pass leaves on top of its copies and its checkpoint (other writers go on). */
export const COMPACT_SPACE_MARGIN_BYTES = 64 * 1024 * 1024;

/** What compaction did (compact() sums its passes). */
export interface CompactStats {
  /** Segments emptied (each file goes once no read still holds its old slots). */
  segments: number;
  /** Chunks copied to lower segments and remapped. */
  chunksMoved: number;
  bytesMoved: number;
  /** Longest hold of a class's writes (draining in-flight writes before a segment is marked). */
  maxHoldMs: number;
}

export interface CompactorDeps {
  io: FileIo;
  dataDir: string;
  chunks: DataStore;
  catalog: Catalog;
  journal: Pick<Journal, 'checkpoint' | 'checkpointLen' | 'log'>;
  reclaimer: Pick<SegmentReclaimer, 'settle'>;
  /** Runs `fn` as a control operation (one at a time; rejects once the store is closed). */
  serial: <T>(fn: () => Promise<T>) => Promise<T>;
  log: LogFn;
  /** Told the bytes each pass moved (the metrics endpoint). */
  onPass?: (bytesMoved: number) => void;
}

/** A chunk class as the planner sees it. */
function usageOf(cls: ChunkClass): ClassUsage & { chunkClass: ChunkClass } {
  return {
    chunkClass: cls, chunkSize: cls.chunkSize, slotsPerSeg: cls.slotsPerSeg, segmentCount: Math.ceil(cls.state.length / cls.slotsPerSeg),
    use: (seg) => cls.segUse[seg] ?? 0,
    usedSlots: (seg) => cls.usedEnd(seg) / cls.chunkSize,
    blocked: (seg) => cls.deleting.has(seg) || cls.evacuating.has(seg),
  };
}

export class Compactor {
  /** Background compaction after commits that free slots (seeded model tests turn it off). */
  autoCompact = true;
  /** Delay from a freeing commit to the background compactor's look (tests may shorten it). */
  delayMs = COMPACT_DELAY_MS;
  private readonly d: CompactorDeps;
  private timer: NodeJS.Timeout | null = null;
  private due = 0;
  private notBefore = 0;
  private stopped = false;

  constructor(deps: CompactorDeps) {
    this.d = deps;
  }

  /** No pass starts after this (the store is closing). */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /**
   * Empties every segment the planner picks, pass after pass, each pass its own control
   * operation; resolves once the emptied files are gone (unless a read still holds their slots).
   */
  async compact(): Promise<CompactStats> {
    const total: CompactStats = { segments: 0, chunksMoved: 0, bytesMoved: 0, maxHoldMs: 0 };
    for (;;) {
      const r = await this.d.serial(() => this.pass());
      if (!r) break;
      total.segments += r.segments;
      total.chunksMoved += r.chunksMoved;
      total.bytesMoved += r.bytesMoved;
      total.maxHoldMs = Math.max(total.maxHoldMs, r.maxHoldMs);
      if (r.chunksMoved === 0) break; // the segment emptied by itself; nothing is being copied
    }
    await this.d.reclaimer.settle();
    return total;
  }

  /** A background look `delayMs` from now (a timer already due sooner is kept). */
  schedule(delayMs: number = this.delayMs): void {
    if (!this.autoCompact || this.stopped) return;
    // Never sooner than the pause after the last pass (its own checkpoint frees slots too).
    const due = Math.max(Date.now() + delayMs, this.notBefore);
    if (this.timer) {
      if (this.due <= due) return;
      clearTimeout(this.timer);
    }
    this.due = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.background();
    }, due - Date.now());
    this.timer.unref();
  }

  private background(): void {
    if (!this.autoCompact || this.stopped) return;
    this.d.serial(() => this.pass()).then(
      // More may qualify: look again after a pause that bounds the compactor's share of the time.
      (r) => {
        if (r) this.schedule(1);
      },
      (e: unknown) => this.d.log('warn', `background compaction failed: ${(e as Error).message}`),
    );
  }

  /** One pass (see move): null when nothing qualifies or the pass gave up. */
  private async pass(): Promise<CompactStats | null> {
    if (this.stopped) return null;
    const { io, dataDir, chunks, journal, log } = this.d;
    // Partial slots whose snapshot is gone give their base back first (partial-merge.ts).
    for (const c of chunks.classes.values()) {
      if (c.partials.size === 0) continue;
      const gates = [...this.d.catalog.volumes()].filter((v) => v.chunkClass === c).map((v) => v.gate);
      if ((await mergeOrphanedPartials(c, chunks, journal, gates)) > 0) this.schedule();
    }
    const plan = planPass([...chunks.classes.values()].map(usageOf), journal.checkpointLen);
    if (!plan) return null;
    const cls = plan.usage.chunkClass;
    // Room for the copies and for the checkpoint that must follow the switch (the old journal
    // stays until it is durable): without it every commit after the switch would fail (ENOSPC)
    // until space came back, where leaving the segments sparse costs nothing.
    let live = 0;
    for (const seg of plan.segs) live += (cls.segUse[seg] ?? 0) * cls.chunkSize;
    const need = live + journal.checkpointLen + COMPACT_SPACE_MARGIN_BYTES;
    const free = await io.freeBytes(dataDir);
    if (free < need) {
      log('info', `compaction skipped: it needs ${need} free bytes in ${dataDir}, ${free} are free`);
      return null;
    }
    const t0 = process.hrtime.bigint();
    const r = await this.move(cls, plan.segs);
    const passMs = Number(process.hrtime.bigint() - t0) / 1e6;
    // The next background pass waits 3x this one: the compactor takes at most COMPACT_DUTY_MAX.
    this.notBefore = Date.now() + passMs * (1 / COMPACT_DUTY_MAX - 1);
    if (r) {
      this.d.onPass?.(r.bytesMoved);
      log('info', `compaction emptied ${r.segments} of ${plan.segs.length} segments of ${cls.chunkSize}-byte chunks: ` +
        `moved ${r.chunksMoved} chunks (${r.bytesMoved} bytes) in ${passMs.toFixed(1)} ms, writes held ${r.maxHoldMs.toFixed(2)} ms`);
    }
    return r;
  }

  /**
   * Moves the live chunks of segments `victims` (ascending) into free slots of lower segments:
   * 1. hold the class's writes only until in-flight ones drained, mark the victims evacuating (no
   *    allocation there, no write in place: a write to one of their chunks redirects), release;
   * 2. copy live slots in batches (reads under a read generation, so a slot freed meanwhile is
   *    not reused under the read); when writes took the free slots below, the victim being copied
   *    and those after it are dropped from the pass; fdatasync the copies — CompactCopied;
   * 3. switch synchronously: every entry of every unique page of the class naming an old slot
   *    names its copy (pages are shared: rewriting them in place keeps sharing and births; slot
   *    counts move with the entries), the old slots fall to pending free, unused copies go back;
   * 4. a checkpoint makes the switch durable (rewritten shared pages cannot be expressed as log
   *    records) — CompactSwitched; its frees are quarantined like any others and each emptied
   *    file is deleted once no read that looked up one of its old slots is running.
   * A crash before 4 leaves the old state with the copies as free slots (reclaimed at open).
   */
  private async move(cls: ChunkClass, victims: number[]): Promise<CompactStats | null> {
    const { io, chunks, catalog, journal, log } = this.d;
    const chunkSize = cls.chunkSize;
    const perSeg = cls.slotsPerSeg;
    const t0 = process.hrtime.bigint();
    const release = await holdAll([...catalog.volumes()].filter((v) => v.chunkClass === cls).map((v) => v.gate));
    for (const v of victims) cls.evacuating.add(v);
    release();
    const maxHoldMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const moveTo = new Map<number, Uint32Array>(); // victim -> its slots' copies (NO_COPY: none)
    const copies: number[] = [];
    const targets = new Set<number>();
    const drop = (v: number): void => {
      moveTo.delete(v);
      cls.evacuating.delete(v);
      cls.resetHint(v);
    };
    let switched = false;
    try {
      const perBatch = Math.max(1, Math.min(perSeg, Math.floor(COMPACT_BATCH_BYTES / chunkSize)));
      const buf = Buffer.allocUnsafe(perBatch * chunkSize);
      let short = false;
      for (const victim of victims) {
        if (short) {
          drop(victim);
          continue;
        }
        const first = victim * perSeg;
        const end = first + perSeg;
        const to = new Uint32Array(perSeg).fill(NO_COPY);
        moveTo.set(victim, to);
        let s = first;
        // A victim whose every chunk was rewritten meanwhile is deleted by the frees (and leaves
        // `evacuating` then): nothing left to copy.
        while (s < end && cls.evacuating.has(victim) && !short) {
          const batch: number[] = [];
          const g = chunks.beginRead();
          try {
            for (; s < end && batch.length < perBatch; s++) if (cls.count(s) > 0) batch.push(s);
            const reads: Promise<void>[] = [];
            for (let i = 0, j = 0; i < batch.length; i = j) {
              j = runEnd(batch, i);
              reads.push(chunks.read(cls, batch[i] as number, 0, (j - i) * chunkSize, buf, i * chunkSize, true)); // true: maintenance I/O (the pool)
            }
            await Promise.all(reads);
          } finally {
            chunks.endRead(g);
          }
          const dst: number[] = [];
          for (let i = 0; i < batch.length && !short; i++) {
            const t = cls.alloc();
            copies.push(t);
            dst.push(t);
            short = cls.segmentOf(t) >= victim; // writes took the free slots below meanwhile
          }
          if (short) break;
          const writes: Promise<void>[] = [];
          for (let i = 0, j = 0; i < dst.length; i = j) {
            j = runEnd(dst, i, perSeg);
            writes.push(chunks.write(cls, dst[i] as number, 0, buf, i * chunkSize, (j - i) * chunkSize, true)); // true: maintenance I/O (the pool)
          }
          // All settled before a failure releases the copies: no write may land in a reused slot.
          for (const r of await Promise.allSettled(writes)) if (r.status === 'rejected') throw r.reason;
          for (let i = 0; i < batch.length; i++) {
            to[(batch[i] as number) - first] = dst[i] as number;
            targets.add(cls.segmentOf(dst[i] as number));
          }
        }
        if (short) drop(victim);
      }
      // The copies are durable before any durable state can name them (the checkpoint's data
      // sync would do it too, but by then the switch is made: syncing first keeps a copy that
      // cannot be synced from ever being named).
      for (const seg of targets) await cls.segments.get(seg)?.file?.datasync();
      io.point(CrashPoint.CompactCopied);
      // The switch: synchronous, so no read or write sees half of it. A victim that left
      // `evacuating` was emptied and deleted by frees meanwhile: its slots may hold new chunks now.
      for (const v of moveTo.keys()) if (!cls.evacuating.has(v)) moveTo.delete(v);
      const l1s = new Set<L1>();
      for (const n of catalog.allNodes()) if (n.vol.chunkClass === cls) l1s.add(n.map.l1);
      const pages = new Set<Page>();
      for (const l1 of l1s) {
        for (const p of l1.pages) {
          if (!p || pages.has(p)) continue;
          pages.add(p);
          // Changed in place below, in this same turn: a checkpoint being written keeps its
          // instant (through the page's L1: its freeze).
          beforePageChange(p, l1);
        }
      }
      // Partial slots and their bases follow their copies first (partial-slots.ts), so the
      // entries' move below frees the old slots without clearing a partial slot.
      const partialsMoved = cls.partials.remap((slot) => {
        const seg = cls.segmentOf(slot);
        const t = moveTo.get(seg)?.[slot - seg * perSeg];
        return t === undefined || t === NO_COPY ? slot : t;
      });
      // Patch pages become full pages first (all of them before any entry moves: a base is
      // remapped in place below, and its patch pages must read it as it was).
      const { remapped, missed } = remapEntries([...pages].map((p) => p.mutable()), moveTo, perSeg, (from, to) => {
        cls.ref(to);
        cls.unref(from);
      });
      switched = true;
      const unused = copies.filter((t) => cls.count(t) === 0); // rewritten or dropped meanwhile
      if (unused.length > 0) chunks.releaseUnmapped(cls, unused);
      for (const v of missed) {
        // Cannot happen (nothing allocates in a victim); if it did, that segment simply stays.
        log('warn', `compaction of ${segmentFile(cls.log2, v)}: entries name uncopied slots`);
        drop(v);
      }
      if (remapped > 0 || partialsMoved > 0) {
        await journal.checkpoint();
        io.point(CrashPoint.CompactSwitched);
      }
      const moved = copies.length - unused.length;
      if (moveTo.size === 0) return null;
      return { segments: moveTo.size, chunksMoved: moved, bytesMoved: moved * chunkSize, maxHoldMs };
    } finally {
      if (!switched) {
        chunks.releaseUnmapped(cls, copies); // never mapped: free at once
        for (const v of victims) drop(v);
      }
    }
  }
}
