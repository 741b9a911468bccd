// A FileIo that passes everything to another one, except that a chosen read, write, fdatasync,
// size or truncate of a file waits until the test lets it go on (or fail): for tests that must stop the engine
// at one exact I/O (a read holding an old slot, a commit inside a segment's fdatasync).
import type { CrashPoint, FileIo, IoFile } from '../../src/storage/file-io.ts';

export type HeldOp = 'read' | 'write' | 'datasync' | 'size' | 'truncate';

export class HoldFileIo implements FileIo {
  private readonly inner: FileIo;
  /** Reads done so far, by path (tests that assert an operation read nothing). */
  readonly reads = new Map<string, number>();
  /** Of those, the ones asked as maintenance reads (IoFile.read's `background`), by path. */
  readonly backgroundReads = new Map<string, number>();
  /** Writes (write or writev) done so far, by path, and of those the maintenance writes. */
  readonly writes = new Map<string, number>();
  readonly backgroundWrites = new Map<string, number>();
  private readonly holds: { suffix: string; op: HeldOp; reached: () => void; gate: Promise<Error | null> }[] = [];

  constructor(inner: FileIo) {
    this.inner = inner;
  }

  /** Reads and writes so far of the files whose path ends with `suffix`, and how many of each were maintenance I/O. */
  ioOf(suffix: string): { reads: number; backgroundReads: number; writes: number; backgroundWrites: number } {
    const sum = (m: Map<string, number>): number => [...m].reduce((n, [p, c]) => (p.endsWith(suffix) ? n + c : n), 0);
    return { reads: sum(this.reads), backgroundReads: sum(this.backgroundReads), writes: sum(this.writes), backgroundWrites: sum(this.backgroundWrites) };
  }

  private count(path: string, all: Map<string, number>, background: Map<string, number>, isBackground: boolean | undefined): void {
    all.set(path, (all.get(path) ?? 0) + 1);
    if (isBackground) background.set(path, (background.get(path) ?? 0) + 1);
  }

  /** The next `op` on a file whose path ends with `suffix` waits; `reached` resolves when it does. */
  hold(suffix: string, op: HeldOp): { reached: Promise<void>; release: (err?: Error) => void } {
    let reached!: () => void;
    let release!: (err: Error | null) => void;
    const r = new Promise<void>((res) => (reached = res));
    const gate = new Promise<Error | null>((res) => (release = res));
    this.holds.push({ suffix, op, reached, gate });
    return { reached: r, release: (err) => release(err ?? null) };
  }

  private async gate(path: string, op: HeldOp): Promise<void> {
    const i = this.holds.findIndex((h) => h.op === op && path.endsWith(h.suffix));
    if (i < 0) return;
    const [h] = this.holds.splice(i, 1);
    h!.reached();
    const err = await h!.gate;
    if (err) throw err;
  }

  open = async (path: string, mode: Parameters<FileIo['open']>[1]): Promise<IoFile> => {
    const f = await this.inner.open(path, mode);
    const read = f.read.bind(f);
    const write = f.write.bind(f);
    const datasync = f.datasync.bind(f);
    f.read = async (buf, off, len, pos, background) => {
      this.count(path, this.reads, this.backgroundReads, background);
      await this.gate(path, 'read');
      return read(buf, off, len, pos, background);
    };
    f.write = async (buf, off, len, pos, background) => {
      this.count(path, this.writes, this.backgroundWrites, background);
      await this.gate(path, 'write');
      return write(buf, off, len, pos, background);
    };
    const writev = f.writev.bind(f);
    f.writev = async (pieces, pos, background) => {
      this.count(path, this.writes, this.backgroundWrites, background);
      await this.gate(path, 'write');
      return writev(pieces, pos, background);
    };
    f.datasync = async () => {
      await this.gate(path, 'datasync');
      return datasync();
    };
    const size = f.size.bind(f);
    const truncate = f.truncate.bind(f);
    f.size = async () => {
      await this.gate(path, 'size');
      return size();
    };
    f.truncate = async (len) => {
      await this.gate(path, 'truncate');
      return truncate(len);
    };
    return f;
  };
  stat = (p: string): ReturnType<FileIo['stat']> => this.inner.stat(p);
  statSync = (p: string): ReturnType<FileIo['statSync']> => this.inner.statSync(p);
  readdir = (d: string): ReturnType<FileIo['readdir']> => this.inner.readdir(d);
  mkdirp = (d: string): ReturnType<FileIo['mkdirp']> => this.inner.mkdirp(d);
  unlink = (p: string): ReturnType<FileIo['unlink']> => this.inner.unlink(p);
  syncDir = (d: string): ReturnType<FileIo['syncDir']> => this.inner.syncDir(d);
  freeBytes = (d: string): ReturnType<FileIo['freeBytes']> => this.inner.freeBytes(d);
  point = (n: CrashPoint): void => this.inner.point(n);
}
