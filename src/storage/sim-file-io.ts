// A simulated file system for power-loss tests (the dm-log-writes model, metadata included):
// every file has a durable image and a current one. Data writes and size changes (a write past
// the end, a truncate) land in the current image and a pending list until fdatasync; creating,
// unlinking a file change the current namespace and become durable only when its
// directory is synced (syncDir). `crash()` cuts the power: each pending data write survives
// whole, is lost, or is torn to a sector prefix; each pending truncate and each unsynced size
// is kept or lost; each unsynced namespace change is kept or lost (in order), all at random.
// The file system's own operations are crash points too (FsCreate, FsUnlink, ...). A crash plan
// stops the world at the Nth hit of a named crash point: from then on every operation of that
// "boot" fails, so an abandoned engine cannot touch later boots.
import { Prng } from '../util/prng.ts';
import type { Gather } from '../util/gather.ts';
import { StorageError } from './device.ts';
import { SECTOR } from './types.ts';
import { CrashPoint, type FileIo, type FileStat, type IoFile, type OpenMode } from './file-io.ts';


export class SimCrash extends Error {
  constructor(point: string) {
    super(`simulated power loss at ${point}`);
    this.name = 'SimCrash';
  }
}

/** A data write, or (data null) a truncate to `pos`. */
interface Pending {
  pos: number;
  data: Buffer | null;
}

class SimNode {
  /** Durable content; its length is the durable size. */
  durable: Buffer = Buffer.alloc(0);
  cur: Buffer = Buffer.alloc(0);
  pending: Pending[] = [];
  mtimeMs = Date.now();
}

/** An unsynced namespace change: `to` null is an unlink, `from` null a create. */
interface NameOp {
  from: string | null;
  to: string | null;
  node: SimNode;
}

/** Decisions a test may force at a crash instead of drawing them (undefined: draw). */
export interface CrashChoices {
  /** Whether the pending data writes of `path` survive whole (true) or vanish (false). */
  keepWrites?: (path: string) => boolean | undefined;
}

function grow(b: Buffer, len: number): Buffer {
  if (b.length >= len) return b;
  const n = Buffer.alloc(len);
  b.copy(n);
  return n;
}

function resize(b: Buffer, len: number): Buffer {
  return b.length > len ? Buffer.from(b.subarray(0, len)) : grow(b, len);
}

function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

function sameDir(a: string, b: string): boolean {
  return a.replace(/\/+$/, '') === b.replace(/\/+$/, '') || (a === '/' && b === '');
}

/** Uniform draws in [0, 1) from the seeded PRNG (src/util/prng.ts). */
export function prng(seed: number): () => number {
  const g = new Prng(seed);
  return () => g.float();
}

export class SimFileIo implements FileIo {
  /** The current namespace: path -> file. */
  readonly files = new Map<string, SimNode>();
  /** The namespace a power loss falls back to (plus whichever unsynced changes survive). */
  private readonly durableNames = new Map<string, SimNode>();
  private nameOps: NameOp[] = [];
  readonly dirs = new Set<string>();
  /** Incremented by crash(): handles of an earlier boot fail. */
  boot = 0;
  dead = false;
  /** Total bytes of current file images allowed (ENOSPC beyond), or Infinity. */
  capacity = Infinity;
  /** Count of every crash point passed, by name (tests pick targets from it). */
  readonly hits = new Map<string, number>();
  private plan: { point: string | null; countdown: number } | null = null;
  /** The crash point that fired last. */
  lastCrash: string | null = null;
  /** fdatasync of a path this returns true for fails with EIO, its writes staying unsynced. */
  failDatasync: ((path: string) => boolean) | null = null;

  get armed(): boolean {
    return this.plan !== null;
  }

  /** Crash at the `n`th (1-based) hit of `point` from now (or of any point when null). */
  armCrash(point: CrashPoint | null, n: number): void {
    this.plan = { point, countdown: n };
  }

  disarm(): void {
    this.plan = null;
  }

  point(name: CrashPoint): void {
    this.alive(this.boot);
    this.hits.set(name, (this.hits.get(name) ?? 0) + 1);
    if (this.plan && (this.plan.point === null || this.plan.point === name) && --this.plan.countdown <= 0) {
      this.plan = null;
      this.dead = true;
      this.lastCrash = name;
      throw new SimCrash(name);
    }
  }

  /** Kills the current boot now (if it is not dead yet). */
  kill(): void {
    this.dead = true;
  }

  /**
   * Power loss: every change not yet durable survives or vanishes (writes may tear at sector
   * granularity), chosen by `rand`. `mode` 'lose' drops all of them, 'keep' keeps all (like
   * kill -9 with a live page cache).
   */
  crash(rand: () => number, mode: 'random' | 'lose' | 'keep' = 'random', choices: CrashChoices = {}): void {
    const keepIt = (): boolean => mode === 'keep' || (mode === 'random' && rand() < 0.5);
    // The namespace first: unsynced creates, unlinks and renames, each kept or lost, in order.
    const names = new Map(this.durableNames);
    for (const op of this.nameOps) {
      if (!keepIt()) continue;
      if (op.from === null) {
        if (!names.has(op.to!)) names.set(op.to!, op.node);
      } else if (names.get(op.from) === op.node) {
        names.delete(op.from);
        if (op.to !== null) names.set(op.to, op.node);
      }
    }
    const nodes = new Set([...names.values(), ...this.files.values()]);
    for (const f of nodes) {
      const path = [...names.entries()].find(([, n]) => n === f)?.[0] ?? '';
      const forced = choices.keepWrites?.(path);
      let img = f.durable;
      for (const p of f.pending) {
        if (p.data === null) {
          if (keepIt()) img = resize(img, p.pos);
          continue;
        }
        let keep = p.data.length;
        if (forced === false || mode === 'lose') keep = 0;
        else if (forced === undefined && mode === 'random') {
          const r = rand();
          if (r < 0.4) keep = 0;
          else if (r < 0.7) keep = Math.floor((rand() * p.data.length) / SECTOR) * SECTOR;
        }
        if (keep > 0) {
          img = grow(img, p.pos + keep);
          p.data.copy(img, p.pos, 0, keep);
        }
      }
      // The file's size is the durable one or the current one (its inode update survived).
      if (f.pending.length > 0) img = resize(img, keepIt() ? f.cur.length : f.durable.length);
      f.pending = [];
      f.durable = img;
      f.cur = Buffer.from(img);
    }
    this.files.clear();
    for (const [p, n] of names) this.files.set(p, n);
    this.durableNames.clear();
    for (const [p, n] of names) this.durableNames.set(p, n);
    this.nameOps = [];
    this.boot++;
    this.dead = false;
    this.plan = null;
  }

  alive(boot: number): void {
    if (this.dead || boot !== this.boot) throw new SimCrash('dead boot');
  }

  usedBytes(): number {
    let n = 0;
    for (const f of this.files.values()) n += f.cur.length;
    return n;
  }

  async open(path: string, mode: OpenMode): Promise<IoFile> {
    this.alive(this.boot);
    let node = this.files.get(path);
    if (!node) {
      if (mode !== 'create') throw new StorageError('ENOENT', `open ${path}: no such file`);
      this.point(CrashPoint.FsCreate);
      node = new SimNode();
      this.files.set(path, node);
      this.nameOps.push({ from: null, to: path, node });
    }
    return new SimFile(this, path, node, this.boot, mode === 'r');
  }

  async stat(path: string): Promise<FileStat | null> {
    this.alive(this.boot);
    return this.statSync(path);
  }

  statSync(path: string): FileStat | null {
    const f = this.files.get(path);
    if (!f) return null;
    // Sparse like ext4: count only non-zero 4 KiB blocks.
    let alloc = 0;
    for (let off = 0; off < f.cur.length; off += 4096) {
      const end = Math.min(off + 4096, f.cur.length);
      for (let i = off; i < end; i++) {
        if (f.cur[i] !== 0) {
          alloc += 4096;
          break;
        }
      }
    }
    return { size: f.cur.length, mtimeMs: f.mtimeMs, allocated: alloc };
  }

  async readdir(dir: string): Promise<string[]> {
    this.alive(this.boot);
    const prefix = dir.endsWith('/') ? dir : dir + '/';
    const out: string[] = [];
    for (const p of this.files.keys()) {
      if (p.startsWith(prefix) && !p.slice(prefix.length).includes('/')) out.push(p.slice(prefix.length));
    }
    return out.sort();
  }

  async mkdirp(dir: string): Promise<void> {
    this.alive(this.boot);
    this.dirs.add(dir);
  }

  async unlink(path: string): Promise<void> {
    this.alive(this.boot);
    const node = this.files.get(path);
    if (!node) return;
    this.point(CrashPoint.FsUnlink);
    this.files.delete(path);
    this.nameOps.push({ from: path, to: null, node });
  }

  /** Makes the namespace changes of entries in `dir` durable (like fsync of a directory). */
  async syncDir(dir: string): Promise<void> {
    this.alive(this.boot);
    this.point(CrashPoint.FsSyncDir);
    await Promise.resolve();
    this.alive(this.boot);
    const inDir = (p: string | null): boolean => p !== null && sameDir(parentOf(p), dir);
    const rest: NameOp[] = [];
    for (const op of this.nameOps) {
      if (!inDir(op.from) && !inDir(op.to)) {
        rest.push(op);
        continue;
      }
      if (op.from !== null && this.durableNames.get(op.from) === op.node) this.durableNames.delete(op.from);
      if (op.to !== null) this.durableNames.set(op.to, op.node);
    }
    this.nameOps = rest;
  }

  async freeBytes(): Promise<number> {
    this.alive(this.boot);
    return Math.max(0, this.capacity - this.usedBytes());
  }
}

class SimFile implements IoFile {
  private readonly fs: SimFileIo;
  private readonly path: string;
  private readonly node: SimNode;
  private readonly boot: number;
  private readonly readOnly: boolean;
  /** Like a closed descriptor: every later call fails with EBADF (as Node's FileHandle does). */
  private closed = false;
  constructor(fs: SimFileIo, path: string, node: SimNode, boot: number, readOnly: boolean) {
    this.fs = fs;
    this.path = path;
    this.node = node;
    this.boot = boot;
    this.readOnly = readOnly;
  }

  private open(what: string): void {
    this.fs.alive(this.boot);
    if (this.closed) throw new StorageError('EBADF', `${what} ${this.path}: file closed`);
  }

  async read(buf: Buffer, off: number, len: number, pos: number): Promise<number> {
    this.open('read');
    const cur = this.node.cur;
    if (pos >= cur.length) return 0;
    const n = Math.min(len, cur.length - pos);
    cur.copy(buf, off, pos, pos + n);
    return n;
  }

  async write(buf: Buffer, off: number, len: number, pos: number): Promise<void> {
    this.open('write');
    if (this.readOnly) throw new StorageError('EBADF', `write ${this.path}: opened read-only`);
    const newLen = Math.max(this.node.cur.length, pos + len);
    if (newLen > this.node.cur.length && this.fs.usedBytes() + newLen - this.node.cur.length > this.fs.capacity) {
      throw new StorageError('ENOSPC', `write ${this.path}: no space left on device`);
    }
    if (newLen > this.node.cur.length) this.fs.point(CrashPoint.FsExtend);
    await Promise.resolve(); // a real write yields; so does this one
    this.fs.alive(this.boot);
    this.node.cur = grow(this.node.cur, newLen);
    buf.copy(this.node.cur, pos, off, off + len);
    this.node.pending.push({ pos, data: Buffer.from(buf.subarray(off, off + len)) });
    this.node.mtimeMs = Date.now();
  }

  /** One write of the joined pieces: the simulation loses or tears it as one. */
  writev(pieces: Gather, pos: number): Promise<void> {
    const b = Buffer.concat(pieces);
    return this.write(b, 0, b.length, pos);
  }

  /** Data and size become durable (the file's directory entry does not: see syncDir). */
  async datasync(): Promise<void> {
    this.open('fdatasync');
    if (this.fs.failDatasync?.(this.path)) throw new StorageError('EIO', `fdatasync ${this.path}: input/output error`);
    await Promise.resolve();
    this.fs.alive(this.boot);
    const n = this.node;
    n.durable = Buffer.from(n.cur);
    n.pending = [];
  }

  async truncate(len: number): Promise<void> {
    this.open('truncate');
    if (len !== this.node.cur.length) this.fs.point(CrashPoint.FsTruncate);
    this.node.cur = resize(this.node.cur, len);
    this.node.pending.push({ pos: len, data: null });
  }

  async size(): Promise<number> {
    this.open('stat');
    return this.node.cur.length;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
