// Every byte the engine reads or writes goes through this small interface, so tests can swap in
// a simulated file system that loses or tears writes that were not fdatasync'ed (sim-file-io.ts)
// and stops dead at named crash points. The real implementation reads and writes with the
// callback fs API on a raw fd (FileHandle's promise machinery cost ~30% of a 4 KiB read), and
// reads (and writes) synchronously while the page cache is serving them (see SyncIoStrategy);
// small reads that miss it fetch their whole 64 KiB window (read-around.ts).
import { constants as fsc, read as fsRead, readSync, statSync, write as fsWrite, writeSync, writev as fsWritev, writevSync } from 'node:fs';
import { mkdir, open, readdir, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { gatherSlice, type Gather } from '../util/gather.ts';
import { StorageError } from './device.ts';
import { diskReads, newFileId, READ_AROUND, readAround, ReadPlan, releaseWindow, takeWindow, windowStart } from './read-around.ts';

export type OpenMode = 'r' | 'rw' | 'create';

export interface IoFile {
  /** Reads up to `len` bytes at `pos` into buf[off..]; returns bytes read (short at EOF). */
  read(buf: Buffer, off: number, len: number, pos: number): Promise<number>;
  /** Writes all of buf[off..off+len) at `pos`. */
  write(buf: Buffer, off: number, len: number, pos: number): Promise<void>;
  /** Writes all of the pieces, one after the other, at `pos` (one pwritev). */
  writev(pieces: Gather, pos: number): Promise<void>;
  datasync(): Promise<void>;
  truncate(len: number): Promise<void>;
  size(): Promise<number>;
  close(): Promise<void>;
}

export interface FileStat {
  size: number;
  mtimeMs: number;
  /** Bytes the file occupies on disk (st_blocks * 512). */
  allocated: number;
}

export interface FileIo {
  /** 'r' read-only; 'rw' existing file read-write; 'create' read-write, created when missing. */
  open(path: string, mode: OpenMode): Promise<IoFile>;
  stat(path: string): Promise<FileStat | null>;
  statSync(path: string): FileStat | null;
  readdir(dir: string): Promise<string[]>;
  mkdirp(dir: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Makes created/removed directory entries durable. */
  syncDir(dir: string): Promise<void>;
  /** Bytes an unprivileged writer may still allocate on the file system holding `dir`. */
  freeBytes(dir: string): Promise<number>;
  /** A named crash point: the simulated file system may stop the world here. No-op for real I/O. */
  point(name: CrashPoint): void;
}

/** Named places in the commit and compaction protocols where a test may cut the power. */
export const CrashPoint = {
  DataWritten: 'data-written',
  BeforeDataSync: 'before-data-sync',
  AfterDataSync: 'after-data-sync',
  JournalAppendMid: 'journal-append-mid',
  BeforeJournalSync: 'before-journal-sync',
  AfterJournalSync: 'after-journal-sync',
  /** After each full piece of a checkpoint longer than one piece (record-pieces.ts). */
  CheckpointPiece: 'checkpoint-piece',
  CheckpointWritten: 'checkpoint-written',
  SuperblockWritten: 'superblock-written',
  AfterSuperblockSync: 'after-superblock-sync',
  CompactCopied: 'compact-copied',
  CompactSwitched: 'compact-switched',
  SegmentDeleted: 'segment-deleted',
  // Hit by the simulated file system itself, before the operation: power cuts between the
  // engine's metadata changes and the syncs that make them durable.
  FsCreate: 'fs-create',
  FsUnlink: 'fs-unlink',
  FsRename: 'fs-rename',
  FsTruncate: 'fs-truncate',
  FsExtend: 'fs-extend',
  FsSyncDir: 'fs-sync-dir',
} as const;
export type CrashPoint = (typeof CrashPoint)[keyof typeof CrashPoint];

export function ioError(e: unknown, what: string): StorageError {
  if (e instanceof StorageError) return e;
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
  return new StorageError(code, `${what}: ${(e as Error | undefined)?.message ?? String(e)}`, { cause: e });
}

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
 * dirty-page throttling writes get slow and go to the pool. A write stall that comes alone does not move them (`isolatedStallMs`): reads keep
 * the stricter rule, a read stall is a disk read that the next read likely repeats.
 */
export const readStrategy = new SyncIoStrategy();
export const writeStrategy = new SyncIoStrategy(undefined, true, SYNC_IO_RULE.writeSlowBaseNs);
/**
 * While reads go to the pool: reads inside a window read whole a moment ago (read-around.ts),
 * which the page cache should hold; the same rule catches it when it no longer does.
 */
export const cachedReadStrategy = new SyncIoStrategy();

function readOnce(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writeOnce(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsWrite(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

function writevOnce(fd: number, pieces: Gather, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsWritev(fd, pieces as Buffer[], pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

class RealFile implements IoFile {
  private readonly fh: FileHandle;
  private readonly fd: number;
  private readonly path: string;
  private readonly id = newFileId();
  constructor(fh: FileHandle, path: string) {
    this.fh = fh;
    this.fd = fh.fd;
    this.path = path;
  }

  read(buf: Buffer, off: number, len: number, pos: number): Promise<number> {
    if (len < SYNC_IO_RULE.poolMinBytes && readStrategy.next()) return this.readNow(readStrategy, buf, off, len, pos);
    const start = windowStart(pos);
    if (pos + len <= start + READ_AROUND.windowBytes) {
      const plan = readAround.plan(this.id, pos);
      if (plan === ReadPlan.Around) return this.readWindow(buf, off, len, pos, start);
      if (plan === ReadPlan.Cached && cachedReadStrategy.next()) return this.readNow(cachedReadStrategy, buf, off, len, pos);
    }
    return this.readAsync(buf, off, len, pos, 0);
  }

  /** A synchronous read, timed into `strategy`. */
  private readNow(strategy: SyncIoStrategy, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
    try {
      const t0 = process.hrtime.bigint();
      const n = readSync(this.fd, buf, off, len, pos);
      const ns = Number(process.hrtime.bigint() - t0);
      // A slow read with no disk read since the last look was a page-cache hit whose thread was
      // preempted (read-around.ts DiskReads): it counts as fast, moves nothing to the pool (where
      // a hot read became a 64 KiB window read) and fetches no window.
      const missed = isSlowIo(ns, len) && diskReads.grew();
      strategy.record(missed ? ns : 0, len);
      if (missed) {
        if (strategy === cachedReadStrategy) readAround.forget(this.id, pos);
        else this.prefetchWindow(pos);
      }
      if (n === len || n === 0) return Promise.resolve(n);
      return this.readAsync(buf, off, len, pos, n);
    } catch (e) {
      return Promise.reject(ioError(e, `read ${this.path}`));
    }
  }

  /**
   * A synchronous read missed the page cache: the window around it goes to the pool now, so the
   * reads near it hit (read-around.ts). Only a hint: its result and errors are dropped.
   */
  private prefetchWindow(pos: number): void {
    const start = windowStart(pos);
    if (!readAround.prefetch(this.id, pos)) return;
    const w = takeWindow();
    fsRead(this.fd, w, 0, READ_AROUND.windowBytes, start, (err) => {
      releaseWindow(w);
      if (!err) readAround.remember(this.id, pos);
    });
  }

  /** A likely miss: reads the whole window at `start` around it (read-around.ts), copies its part. */
  private async readWindow(buf: Buffer, off: number, len: number, pos: number, start: number): Promise<number> {
    const w = takeWindow();
    let got: number;
    try {
      got = await readOnce(this.fd, w, 0, READ_AROUND.windowBytes, start);
    } catch (e) {
      releaseWindow(w);
      throw ioError(e, `read ${this.path}`);
    }
    const n = Math.max(0, Math.min(got, pos + len - start) - (pos - start));
    w.copy(buf, off, pos - start, pos - start + n);
    releaseWindow(w);
    readAround.remember(this.id, pos);
    // Short only at the end of the file or on a rare short read: the usual loop finishes it.
    return n === len ? n : this.readAsync(buf, off, len, pos, n);
  }

  private async readAsync(buf: Buffer, off: number, len: number, pos: number, done: number): Promise<number> {
    try {
      while (done < len) {
        const n = await readOnce(this.fd, buf, off + done, len - done, pos + done);
        if (n === 0) break;
        done += n;
      }
    } catch (e) {
      throw ioError(e, `read ${this.path}`);
    }
    return done;
  }

  write(buf: Buffer, off: number, len: number, pos: number): Promise<void> {
    if (len <= SYNC_IO_RULE.syncWriteMaxBytes && writeStrategy.next()) {
      try {
        const t0 = process.hrtime.bigint();
        let done = 0;
        while (done < len) done += writeSync(this.fd, buf, off + done, len - done, pos + done);
        writeStrategy.record(Number(process.hrtime.bigint() - t0), len);
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(ioError(e, `write ${this.path}`));
      }
    }
    return this.writeAsync(buf, off, len, pos);
  }

  private async writeAsync(buf: Buffer, off: number, len: number, pos: number): Promise<void> {
    let done = 0;
    try {
      while (done < len) done += await writeOnce(this.fd, buf, off + done, len - done, pos + done);
    } catch (e) {
      throw ioError(e, `write ${this.path}`);
    }
  }

  writev(pieces: Gather, pos: number): Promise<void> {
    let len = 0;
    for (const p of pieces) len += p.length;
    if (len <= SYNC_IO_RULE.syncWriteMaxBytes && writeStrategy.next()) {
      try {
        const t0 = process.hrtime.bigint();
        let done = writevSync(this.fd, pieces as Buffer[], pos);
        // A short write (rare for files) goes on from where it stopped.
        while (done < len) done += writevSync(this.fd, gatherSlice(pieces, done, len - done), pos + done);
        writeStrategy.record(Number(process.hrtime.bigint() - t0), len);
        return Promise.resolve();
      } catch (e) {
        return Promise.reject(ioError(e, `write ${this.path}`));
      }
    }
    return this.writevAsync(pieces, len, pos);
  }

  private async writevAsync(pieces: Gather, len: number, pos: number): Promise<void> {
    try {
      let done = await writevOnce(this.fd, pieces, pos);
      while (done < len) done += await writevOnce(this.fd, gatherSlice(pieces, done, len - done), pos + done);
    } catch (e) {
      throw ioError(e, `write ${this.path}`);
    }
  }

  async datasync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (e) {
      throw ioError(e, `fdatasync ${this.path}`);
    }
  }

  async truncate(len: number): Promise<void> {
    try {
      await this.fh.truncate(len);
    } catch (e) {
      throw ioError(e, `truncate ${this.path}`);
    }
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

function toStat(st: { size: number; mtimeMs: number; blocks: number }): FileStat {
  return { size: st.size, mtimeMs: st.mtimeMs, allocated: st.blocks * 512 };
}

/** The real file system. */
export const realFileIo: FileIo = {
  async open(path, mode) {
    const flags = mode === 'r' ? fsc.O_RDONLY : mode === 'rw' ? fsc.O_RDWR : fsc.O_RDWR | fsc.O_CREAT;
    try {
      return new RealFile(await open(path, flags, 0o600), path);
    } catch (e) {
      throw ioError(e, `open ${path}`);
    }
  },
  async stat(path) {
    try {
      return toStat(await stat(path));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw ioError(e, `stat ${path}`);
    }
  },
  statSync(path) {
    try {
      return toStat(statSync(path));
    } catch {
      return null;
    }
  },
  async readdir(dir) {
    try {
      return await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError(e, `readdir ${dir}`);
    }
  },
  async mkdirp(dir) {
    await mkdir(dir, { recursive: true });
  },
  async unlink(path) {
    try {
      await unlink(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(e, `unlink ${path}`);
    }
  },
  async syncDir(dir) {
    const fh = await open(dir, fsc.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
  async freeBytes(dir) {
    try {
      const st = await statfs(dir);
      return st.bavail * st.bsize;
    } catch (e) {
      throw ioError(e, `statfs ${dir}`);
    }
  },
  point() {},
};
