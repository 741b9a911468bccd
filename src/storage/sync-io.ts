// When the engine's file I/O runs on the event loop and when in libuv's thread pool: one rule per
// direction for the whole process, judged from the time each synchronous call took (file-io.ts
// asks it before every read and write).

/**
 * Reads served from the page cache are ~2.5x faster done synchronously on the event loop than
 * through libuv's thread pool; reads that go to the disk block the loop and are far slower that
 * way (bench/README.md). So: read synchronously while reads are fast, switch to the pool when
 * too many in a window were slow, and from the pool probe with an occasional synchronous read to
 * switch back when the data is cached again.
 */
export const SYNC_IO_RULE = {
  /** A synchronous read slower than this (plus the copy time of its length) counts as a miss. */
  slowBaseNs: 20_000,
  /**
   * The same for writes. A write the page cache absorbs takes 2-8 µs, but one in eight takes
   * 16-200 µs on a busy 2-core machine (ext4 allocating a fresh block, the loop preempted): CPU
   * the pool would spend too, plus its wake-ups. With the read threshold, 60-70 % of randwrite-4k's
   * writes went to the pool and the server spent 19.5 µs a request against 12.5 all synchronous
   * (bench/README.md, "Writes: a slow write is one of half a millisecond"). What the pool is for,
   * dirty-page throttling, sleeps a jiffy or more per write.
   */
  writeSlowBaseNs: 500_000,
  /** Copy speed assumed for a cached read: 1 byte per ns ≈ 1 GB/s, generous for a busy machine. */
  nsPerByte: 1,
  /** Reads per decision window in synchronous mode, and misses in it that switch to the pool. */
  window: 64,
  missesToAsync: 8,
  /** In pool mode, one read in this many is a synchronous probe... */
  probeEvery: 64,
  /** ...and this many probes with at most `probeMissesToStay` misses switch back. */
  probes: 8,
  probeMissesToStay: 1,
  /**
   * I/O this large always goes to the pool: its copy is long enough that a pool thread doing it
   * in parallel with the event loop's socket copies beats the ~10 µs of waking the thread
   * (1 MiB reads: the loop was 80% busy in pread + writev, serially).
   */
  poolMinBytes: 128 * 1024,
  /**
   * Writes up to this size ignore `poolMinBytes`: they stay synchronous while the page cache
   * absorbs them (the same strategy, so throttling or slow copies still move them to the pool).
   * A 1 MiB write done at once copies the payload the loop has just received, still in this
   * core's cache, and skips the pool's wake-ups and the pool threads' contention on the file's
   * lock: seqwrite-1m's server CPU per GiB ~30 % lower (bench/README.md, w8/seqw). Larger writes
   * keep the pool, so one request never holds the loop for long.
   */
  syncWriteMaxBytes: 1024 * 1024,
  /**
   * One synchronous I/O slower than this moves to the pool at once (writes: the second within
   * `isolatedStallMs`): a write caught by the kernel's dirty-page throttling or a read behind a
   * writeback queue held the whole event loop (every connection, the control socket) for
   * ~100 ms with 8 GiB written (bench/README.md)...
   */
  stallNs: 10_000_000,
  /**
   * ...and no synchronous probe is tried for this long after it (a probe would stall again). A
   * one-off stall (a write waiting once for the file system's journal, or the process preempted
   * on a busy machine) costs this much time in the pool, where a write costs twice the CPU of
   * one the page cache absorbs (bench/README.md)...
   */
  stallHoldMinMs: 100,
  /** ...the hold doubles each time a probe after it stalls again (the throttling goes on), up to this. */
  stallHoldMaxMs: 1600,
  /**
   * Writes only: a stall with no other stall this long before it leaves writes synchronous (it
   * counts as a slow write in the window); a second one within this time moves them to the pool.
   * Dirty-page throttling stalls write after write, so it still moves at the second; a one-off
   * (a write meeting the commit's fdatasync once, a preemption) no longer costs a hold of pool
   * writes at ~2x the CPU each: randwrite-4k's server sent 18-22 % of its writes to the pool
   * after ~20 such stalls, 52bfdf4 (no stall rule) 1-3 % (bench/README.md, issue 11 w7/wrand).
   */
  isolatedStallMs: 250,
} as const;

/** Whether a synchronous I/O of `len` bytes that took `ns` missed the page cache. */
export function isSlowIo(ns: number, len: number, baseNs: number = SYNC_IO_RULE.slowBaseNs): boolean {
  return ns > baseNs + len * SYNC_IO_RULE.nsPerByte;
}

/** For one direction (reads or writes): whether the next I/O runs synchronously or in the pool. */
export class SyncIoStrategy {
  sync = true;
  private reads = 0;
  private misses = 0;
  /** After a stall: no probe before this time (ms of `clock`), 0 when none is pending. */
  private holdUntil = 0;
  /** The last hold's length (ms); 0 once I/O is synchronous again, so the next stall holds briefly. */
  private holdMs = 0;
  /** When the last stall was (ms of `clock`), for `isolatedStalls`. */
  private lastStall = -Infinity;
  private readonly clock: () => number;
  /** Whether a stall with no other within `isolatedStallMs` before it leaves I/O synchronous (writes). */
  private readonly isolatedStalls: boolean;
  /** `isSlowIo`'s base: SYNC_IO_RULE.slowBaseNs for reads, writeSlowBaseNs for writes. */
  private readonly slowBaseNs: number;

  constructor(clock: () => number = () => performance.now(), isolatedStalls = false, slowBaseNs: number = SYNC_IO_RULE.slowBaseNs) {
    this.clock = clock;
    this.isolatedStalls = isolatedStalls;
    this.slowBaseNs = slowBaseNs;
  }

  /** Whether the next I/O should be synchronous. */
  next(): boolean {
    if (this.sync) return true;
    if (this.holdUntil !== 0) {
      if (this.clock() < this.holdUntil) return false;
      this.holdUntil = 0;
    }
    return ++this.reads % SYNC_IO_RULE.probeEvery === 0;
  }

  /** For a stall (`isolatedStalls`): whether it came alone, so synchronous I/O goes on. */
  private isolatedStall(): boolean {
    if (!this.isolatedStalls || !this.sync) return false;
    const now = this.clock();
    const alone = now - this.lastStall > SYNC_IO_RULE.isolatedStallMs;
    this.lastStall = now;
    return alone;
  }

  /** Records a synchronous I/O's time. */
  record(ns: number, len: number): void {
    if (ns > SYNC_IO_RULE.stallNs && !this.isolatedStall()) {
      this.sync = false;
      this.reads = 0;
      this.misses = 0;
      this.holdMs = this.holdMs === 0 ? SYNC_IO_RULE.stallHoldMinMs : Math.min(this.holdMs * 2, SYNC_IO_RULE.stallHoldMaxMs);
      this.holdUntil = this.clock() + this.holdMs;
      return;
    }
    if (isSlowIo(ns, len, this.slowBaseNs)) this.misses++;
    if (this.sync) {
      if (++this.reads < SYNC_IO_RULE.window) return;
      if (this.misses >= SYNC_IO_RULE.missesToAsync) this.sync = false;
      this.reads = 0;
      this.misses = 0;
      return;
    }
    // a probe
    const probes = this.reads / SYNC_IO_RULE.probeEvery;
    if (probes < SYNC_IO_RULE.probes) return;
    if (this.misses <= SYNC_IO_RULE.probeMissesToStay) {
      this.sync = true;
      this.holdMs = 0;
    }
    this.reads = 0;
    this.misses = 0;
  }
}

/**
 * One strategy per direction for the process: the page cache and the event loop are shared by
 * every file. Writes use the same rule with their own threshold (`writeSlowBaseNs`): a write the
 * page cache absorbs costs less done at once than the ~10 µs of waking a pool thread; under
 * dirty-page throttling writes get slow and go to the pool. A write stall that comes alone does
 * not move them (`isolatedStallMs`): reads keep the stricter rule, a read stall is a disk read
 * that the next read likely repeats.
 */
export const readStrategy = new SyncIoStrategy();
export const writeStrategy = new SyncIoStrategy(undefined, true, SYNC_IO_RULE.writeSlowBaseNs);
/**
 * While reads go to the pool: reads inside a window read whole a moment ago (read-around.ts),
 * which the page cache should hold; the same rule catches it when it no longer does.
 */
export const cachedReadStrategy = new SyncIoStrategy();
