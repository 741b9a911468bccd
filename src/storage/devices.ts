// The BlockDevices the engine hands to the NBD server (device.ts is the interface): a volume's
// writable head and a snapshot's read-only view. Thin: each call goes to the data path, a head's
// after the fill hook (fill.ts) when the volume is still being filled.
import type { Node, Volume } from './catalog.ts';
import type { DataPath } from './data-path.ts';
import type { Gather } from '../util/gather.ts';
import { StorageError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions } from './device.ts';

export class HeadDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = false;
  readonly preferredBlockSize: number;
  readonly multiConn = true;
  private readonly path: DataPath;
  private readonly vol: Volume;
  /** The fill source's own device (fill.ts): its writes are the filling, so they skip the hook. */
  private readonly filler: boolean;
  constructor(path: DataPath, vol: Volume, filler = false) {
    this.path = path;
    this.vol = vol;
    this.size = vol.size; // fixed for its holders: a resize makes a new device (engine.ts resizeVolume)
    this.preferredBlockSize = vol.chunkSize;
    this.filler = filler;
  }
  /** The fill hook: null when [offset, +length) is ready, else a promise that makes it ready. */
  private unfilled(offset: number, length: number, forWrite: boolean): Promise<void> | null {
    const fill = this.vol.fill;
    if (fill === null || this.filler || !fill.pending(offset, length, forWrite)) return null;
    return fill.ensure(offset, length, forWrite);
  }
  read(offset: number, length: number, into: Buffer): Promise<void> {
    const wait = this.unfilled(offset, length, false);
    if (wait) return wait.then(() => this.path.read(this.vol.head, offset, length, into, 0));
    return this.path.read(this.vol.head, offset, length, into, 0);
  }
  /** A write, trim or zero the fill hook let through; the source then learns how it ended. */
  private async afterFill(wait: Promise<void>, offset: number, length: number, op: () => Promise<void>): Promise<void> {
    const fill = this.vol.fill;
    await wait;
    let ok = false;
    try {
      await op();
      ok = true;
    } finally {
      await fill?.written?.(offset, length, ok);
    }
  }
  write(offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
    const wait = this.unfilled(offset, data.length, true);
    if (wait) {
      const copy = Buffer.from(data); // `data` may be a pooled buffer reused after this call returns
      return this.afterFill(wait, offset, copy.length, () => this.path.write(this.vol, offset, copy, copy.length, opts.fua));
    }
    return this.path.write(this.vol, offset, data, data.length, opts.fua);
  }
  writeGather(offset: number, pieces: Gather, length: number, opts: WriteOptions): Promise<void> {
    const wait = this.unfilled(offset, length, true);
    if (wait) {
      const copy = Buffer.concat(pieces, length); // as in write: the pieces may not outlive the call
      return this.afterFill(wait, offset, length, () => this.path.write(this.vol, offset, copy, length, opts.fua));
    }
    return this.path.write(this.vol, offset, pieces, length, opts.fua);
  }
  trim(offset: number, length: number, opts: WriteOptions): Promise<void> {
    const op = (): Promise<void> => this.path.zeroRange(this.vol, offset, length, { fua: opts.fua, noHole: false, fast: false });
    const wait = this.unfilled(offset, length, true);
    return wait ? this.afterFill(wait, offset, length, op) : op();
  }
  zero(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    const op = (): Promise<void> => this.path.zeroRange(this.vol, offset, length, opts);
    const wait = this.unfilled(offset, length, true);
    return wait ? this.afterFill(wait, offset, length, op) : op();
  }
  flush(): Promise<void> {
    return this.path.flush();
  }
  async cache(): Promise<void> {}
  extents(offset: number, length: number): Promise<Extent[]> {
    // While filling, an unfilled range is a hole in the map yet not zeros: report all as data.
    if (this.vol.fill !== null && !this.filler) return Promise.resolve([{ length, hole: false, zero: false }]);
    return this.path.extents(this.vol.head, offset, length);
  }
}

export class SnapshotDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  readonly preferredBlockSize: number;
  readonly multiConn = true;
  private readonly path: DataPath;
  private readonly node: Node;
  /** A bulk copy's view: its reads are maintenance reads (IoFile.read's `background`). */
  private readonly background: boolean;
  constructor(path: DataPath, node: Node, background = false) {
    this.path = path;
    this.node = node;
    this.background = background;
    this.size = node.size; // its own: a resize of the volume changes only the head
    this.preferredBlockSize = node.vol.chunkSize;
  }
  read(offset: number, length: number, into: Buffer): Promise<void> {
    return this.path.read(this.node, offset, length, into, 0, this.background);
  }
  private readOnlyError(): Promise<void> {
    return Promise.reject(new StorageError('EROFS', `snapshot '${this.node.vol.name}@${this.node.name}' is read-only`));
  }
  write(): Promise<void> {
    return this.readOnlyError();
  }
  trim(): Promise<void> {
    return this.readOnlyError();
  }
  zero(): Promise<void> {
    return this.readOnlyError();
  }
  async flush(): Promise<void> {}
  async cache(): Promise<void> {}
  extents(offset: number, length: number): Promise<Extent[]> {
    if (this.node.deleted) return Promise.reject(new StorageError('EIO', 'snapshot was deleted'));
    return this.path.extents(this.node, offset, length);
  }
}
