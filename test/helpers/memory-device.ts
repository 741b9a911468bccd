// An in-memory BlockDevice for server tests: a Buffer plus one allocation state per 4 KiB block,
// so extents report holes and zeros truthfully. It can be read-only, fail its next operation
// with a StorageError (fault injection), hold operations until the test releases them (to force
// out-of-order completion and in-flight caps), and it tracks which writes are durable.
import { StorageError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions } from '../../src/storage/device.ts';

/** Allocation granularity of the bitmap. */
export const MEMORY_BLOCK = 4096;

/** Per-block allocation state. */
export const BlockState = {
  /** Never written or trimmed: reads as zeros, reported HOLE|ZERO. */
  Hole: 0,
  /** Holds data. */
  Data: 1,
  /** Allocated but known zero (WRITE_ZEROES with NO_HOLE): reported ZERO only. */
  Zero: 2,
} as const;
export type BlockState = (typeof BlockState)[keyof typeof BlockState];

export type OpKind = 'read' | 'write' | 'trim' | 'zero' | 'flush' | 'cache' | 'extents';

export interface MemoryDeviceOptions {
  size?: number;
  readOnly?: boolean;
  preferredBlockSize?: number;
  multiConn?: boolean;
  /** Whether WRITE_ZEROES with FAST_ZERO succeeds (else it fails ENOTSUP before touching data). */
  fastZero?: boolean;
}

export interface OpRecord {
  op: OpKind;
  offset: number;
  length: number;
  fua?: boolean;
  noHole?: boolean;
  fast?: boolean;
}

interface Fault { errno: string; op: OpKind | undefined }
interface Hold { op: OpKind | undefined; release: Promise<void>; onStart: () => void }

export class MemoryDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly preferredBlockSize: number;
  readonly multiConn: boolean;
  readonly data: Buffer;
  readonly blocks: Uint8Array;
  /** Every operation started, in order. */
  readonly ops: OpRecord[] = [];
  /** Operations started and not yet finished. */
  running = 0;
  /** Most operations running at the same time. */
  maxRunning = 0;
  /** Writes (write/trim/zero) that have resolved, and how many of those are durable. */
  resolvedWrites = 0;
  durableWrites = 0;
  private readonly fastZero: boolean;
  private faults: Fault[] = [];
  private holds: Hold[] = [];

  constructor(opts: MemoryDeviceOptions = {}) {
    this.size = opts.size ?? 1024 * 1024;
    this.readOnly = opts.readOnly ?? false;
    this.preferredBlockSize = opts.preferredBlockSize ?? MEMORY_BLOCK;
    this.multiConn = opts.multiConn ?? true;
    this.fastZero = opts.fastZero ?? true;
    this.data = Buffer.alloc(this.size);
    this.blocks = new Uint8Array(Math.ceil(this.size / MEMORY_BLOCK));
  }

  /** The next operation (of kind `op`, or any) throws StorageError(errno). */
  failNext(errno: string, op?: OpKind): void {
    this.faults.push({ errno, op });
  }

  /**
   * The next operation (of kind `op`, or any) waits until `release()`; `started` resolves when it
   * has begun. Several holds queue up in order.
   */
  hold(op?: OpKind): { started: Promise<void>; release: () => void } {
    let release!: () => void;
    let onStart!: () => void;
    const started = new Promise<void>((r) => (onStart = r));
    this.holds.push({ op, release: new Promise<void>((r) => (release = r)), onStart });
    return { started, release };
  }

  /** Fills [offset, offset+data.length) as a write would, without recording an op. */
  preload(offset: number, data: Buffer): void {
    data.copy(this.data, offset);
    this.markRange(offset, data.length, BlockState.Data);
  }

  async read(offset: number, length: number, into: Buffer): Promise<void> {
    await this.begin({ op: 'read', offset, length });
    try {
      this.checkRange(offset, length);
      this.data.copy(into, 0, offset, offset + length);
    } finally {
      this.end();
    }
  }

  async write(offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
    await this.begin({ op: 'write', offset, length: data.length, fua: opts.fua });
    try {
      this.checkWritable();
      this.checkRange(offset, data.length);
      data.copy(this.data, offset);
      this.markRange(offset, data.length, BlockState.Data);
      this.resolvedWrite(opts.fua);
    } finally {
      this.end();
    }
  }

  async trim(offset: number, length: number, opts: WriteOptions): Promise<void> {
    await this.begin({ op: 'trim', offset, length, fua: opts.fua });
    try {
      this.checkWritable();
      this.checkRange(offset, length);
      this.zeroRange(offset, length, BlockState.Hole);
      this.resolvedWrite(opts.fua);
    } finally {
      this.end();
    }
  }

  async zero(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    await this.begin({ op: 'zero', offset, length, fua: opts.fua, noHole: opts.noHole, fast: opts.fast });
    try {
      this.checkWritable();
      this.checkRange(offset, length);
      if (opts.fast && !this.fastZero) throw new StorageError('ENOTSUP', 'no fast zero on this device');
      this.zeroRange(offset, length, opts.noHole ? BlockState.Zero : BlockState.Hole);
      this.resolvedWrite(opts.fua);
    } finally {
      this.end();
    }
  }

  async flush(): Promise<void> {
    // Covers the writes resolved before the call (BlockDevice contract).
    const upTo = this.resolvedWrites;
    await this.begin({ op: 'flush', offset: 0, length: 0 });
    try {
      this.durableWrites = Math.max(this.durableWrites, upTo);
    } finally {
      this.end();
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.begin({ op: 'cache', offset, length });
    try {
      this.checkRange(offset, length);
    } finally {
      this.end();
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    await this.begin({ op: 'extents', offset, length });
    try {
      this.checkRange(offset, length);
      return this.extentsSync(offset, length);
    } finally {
      this.end();
    }
  }

  /** The truth about [offset, offset+length), merged runs; used by tests as the expected answer. */
  extentsSync(offset: number, length: number): Extent[] {
    const out: Extent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / MEMORY_BLOCK);
      const runEnd = Math.min(end, (b + 1) * MEMORY_BLOCK);
      const st = this.blocks[b] ?? BlockState.Hole;
      const e: Extent = { length: runEnd - pos, hole: st === BlockState.Hole, zero: st !== BlockState.Data };
      const last = out[out.length - 1];
      if (last && last.hole === e.hole && last.zero === e.zero) last.length += e.length;
      else out.push(e);
      pos = runEnd;
    }
    return out;
  }

  // ---- internals ----

  private async begin(rec: OpRecord): Promise<void> {
    this.ops.push(rec);
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    try {
      const hi = this.holds.findIndex((h) => h.op === undefined || h.op === rec.op);
      if (hi >= 0) {
        const h = this.holds.splice(hi, 1)[0]!;
        h.onStart();
        await h.release;
      } else {
        await Promise.resolve(); // always asynchronous, like real storage
      }
      const fi = this.faults.findIndex((f) => f.op === undefined || f.op === rec.op);
      if (fi >= 0) {
        const f = this.faults.splice(fi, 1)[0]!;
        throw new StorageError(f.errno, `injected ${f.errno} on ${rec.op}`);
      }
    } catch (e) {
      this.end();
      throw e;
    }
  }

  private end(): void {
    this.running--;
  }

  private resolvedWrite(fua: boolean): void {
    this.resolvedWrites++;
    // A FUA write is durable on its own; the ones before it are not made durable by it.
    if (fua && this.durableWrites === this.resolvedWrites - 1) this.durableWrites = this.resolvedWrites;
  }

  private checkWritable(): void {
    if (this.readOnly) throw new StorageError('EROFS', 'memory device is read-only');
  }

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new StorageError('EINVAL', `range ${offset}+${length} outside ${this.size}`);
    }
  }

  /** Blocks touched by a write hold data. */
  private markRange(offset: number, length: number, st: BlockState): void {
    if (length === 0) return;
    const first = Math.floor(offset / MEMORY_BLOCK);
    const last = Math.floor((offset + length - 1) / MEMORY_BLOCK);
    for (let b = first; b <= last; b++) this.blocks[b] = st;
  }

  /** Zeroes bytes; whole blocks take state `whole`, partial blocks keep their state (or become data). */
  private zeroRange(offset: number, length: number, whole: BlockState): void {
    this.data.fill(0, offset, offset + length);
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / MEMORY_BLOCK);
      const bStart = b * MEMORY_BLOCK;
      const bEnd = Math.min(bStart + MEMORY_BLOCK, this.size);
      if (pos === bStart && end >= bEnd) this.blocks[b] = whole;
      else if (this.blocks[b] === BlockState.Hole && whole !== BlockState.Hole) this.blocks[b] = BlockState.Zero;
      pos = Math.min(end, bEnd);
    }
    // A partial block that is now all zeros is still "data" (we do not scan): truthful, just not minimal.
  }
}
