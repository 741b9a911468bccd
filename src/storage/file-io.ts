// Every byte the engine reads or writes goes through this small interface, so tests can swap in
// a simulated file system that loses or tears writes that were not fdatasync'ed (sim-file-io.ts)
// and stops dead at named crash points. The real implementation reads and writes with the
// callback fs API on a raw fd (FileHandle's promise machinery cost ~30% of a 4 KiB read), and
// reads (and writes) synchronously while the page cache is serving them (sync-io.ts);
// small reads that miss it fetch their whole 64 KiB window (read-around.ts).
import { constants as fsc, read as fsRead, readSync, statSync, write as fsWrite, writeSync, writev as fsWritev, writevSync } from 'node:fs';
import { mkdir, open, readdir, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { gatherSlice, type Gather } from '../util/gather.ts';
import { StorageError } from './device.ts';
import { diskReads, newFileId, READ_AROUND, readAround, ReadPlan, releaseWindow, takeWindow, windowStart } from './read-around.ts';
import { cachedReadStrategy, isSlowIo, readStrategy, SYNC_IO_RULE, SyncIoStrategy, writeStrategy } from './sync-io.ts';

export type OpenMode = 'r' | 'rw' | 'create';

export interface IoFile {
  /**
   * Reads up to `len` bytes at `pos` into buf[off..]; returns bytes read (short at EOF).
   * `background`: a maintenance read (a compaction pass, a partial slot's merge, a write's merge
   * of its chunk, a bulk copy of a snapshot), always in libuv's pool (RealFile.read says why).
   */
  read(buf: Buffer, off: number, len: number, pos: number, background?: boolean): Promise<number>;
  /** Writes all of buf[off..off+len) at `pos`. `background`: as for read, a maintenance write. */
  write(buf: Buffer, off: number, len: number, pos: number, background?: boolean): Promise<void>;
  /** Writes all of the pieces, one after the other, at `pos` (one pwritev). `background`: as for write. */
  writev(pieces: Gather, pos: number, background?: boolean): Promise<void>;
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

  read(buf: Buffer, off: number, len: number, pos: number, background = false): Promise<number> {
    // Maintenance reads never run on the loop nor count in the rule: they read what no client
    // read lately (old segments, a merge's base), so they miss the page cache more often than
    // not, and a synchronous miss holds every connection for as long as the disk takes (a
    // client write's read of an evicted block: 48-123 ms on a slow disk, bench/README.md, stop
    // 32). Their misses say nothing of what client reads meet either.
    if (background) return this.readAsync(buf, off, len, pos, 0);
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

  write(buf: Buffer, off: number, len: number, pos: number, background = false): Promise<void> {
    // Maintenance writes (a compaction's copies, a merge's blocks) are bulk: the ones most likely
    // to meet the kernel's dirty-page throttling, which sleeps the writer up to 200 ms.
    if (!background && len <= SYNC_IO_RULE.syncWriteMaxBytes && writeStrategy.next()) {
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

  writev(pieces: Gather, pos: number, background = false): Promise<void> {
    let len = 0;
    for (const p of pieces) len += p.length;
    if (!background && len <= SYNC_IO_RULE.syncWriteMaxBytes && writeStrategy.next()) {
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
