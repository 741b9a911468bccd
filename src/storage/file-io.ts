// Every byte the engine reads or writes goes through this small interface, so tests can swap in
// a simulated file system that loses or tears writes that were not fdatasync'ed (sim-file-io.ts)
// and stops dead at named crash points. The real implementation is a thin layer over
// fs/promises FileHandle.
import { constants as fsc, statSync } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { StorageError } from './device.ts';

export type OpenMode = 'r' | 'rw' | 'create';

export interface IoFile {
  /** Reads up to `len` bytes at `pos` into buf[off..]; returns bytes read (short at EOF). */
  read(buf: Buffer, off: number, len: number, pos: number): Promise<number>;
  /** Writes all of buf[off..off+len) at `pos`. */
  write(buf: Buffer, off: number, len: number, pos: number): Promise<void>;
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
  rename(from: string, to: string): Promise<void>;
  /** Makes created/removed/renamed directory entries durable. */
  syncDir(dir: string): Promise<void>;
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
  CheckpointWritten: 'checkpoint-written',
  SuperblockWritten: 'superblock-written',
  AfterSuperblockSync: 'after-superblock-sync',
  CompactCopied: 'compact-copied',
  CompactSwitched: 'compact-switched',
  SegmentDeleted: 'segment-deleted',
} as const;
export type CrashPoint = (typeof CrashPoint)[keyof typeof CrashPoint];

export function ioError(e: unknown, what: string): StorageError {
  if (e instanceof StorageError) return e;
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
  return new StorageError(code, `${what}: ${(e as Error | undefined)?.message ?? String(e)}`, { cause: e });
}

class RealFile implements IoFile {
  private readonly fh: FileHandle;
  private readonly path: string;
  constructor(fh: FileHandle, path: string) {
    this.fh = fh;
    this.path = path;
  }

  async read(buf: Buffer, off: number, len: number, pos: number): Promise<number> {
    let done = 0;
    try {
      while (done < len) {
        const { bytesRead } = await this.fh.read(buf, off + done, len - done, pos + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (e) {
      throw ioError(e, `read ${this.path}`);
    }
    return done;
  }

  async write(buf: Buffer, off: number, len: number, pos: number): Promise<void> {
    let done = 0;
    try {
      while (done < len) {
        const { bytesWritten } = await this.fh.write(buf, off + done, len - done, pos + done);
        done += bytesWritten;
      }
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
  async rename(from, to) {
    await rename(from, to);
  },
  async syncDir(dir) {
    const fh = await open(dir, fsc.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
  point() {},
};
