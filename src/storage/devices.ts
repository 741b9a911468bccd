// The BlockDevices the engine hands to the NBD server (device.ts is the interface): a volume's
// writable head and a snapshot's read-only view. Thin: each call goes to the data path.
import type { Node, Volume } from './catalog.ts';
import type { DataPath } from './data-path.ts';
import { StorageError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions } from './device.ts';

export class HeadDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = false;
  readonly preferredBlockSize: number;
  readonly multiConn = true;
  private readonly path: DataPath;
  private readonly vol: Volume;
  constructor(path: DataPath, vol: Volume) {
    this.path = path;
    this.vol = vol;
    this.size = vol.size; // fixed for its holders: a resize makes a new device (engine.ts resizeVolume)
    this.preferredBlockSize = vol.chunkSize;
  }
  read(offset: number, length: number, into: Buffer): Promise<void> {
    return this.path.read(this.vol.head, offset, length, into, 0);
  }
  write(offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.path.write(this.vol, offset, data, data.length, opts.fua);
  }
  trim(offset: number, length: number, opts: WriteOptions): Promise<void> {
    return this.path.zeroRange(this.vol, offset, length, { fua: opts.fua, noHole: false, fast: false });
  }
  zero(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    return this.path.zeroRange(this.vol, offset, length, opts);
  }
  flush(): Promise<void> {
    return this.path.flush();
  }
  async cache(): Promise<void> {}
  extents(offset: number, length: number): Promise<Extent[]> {
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
  constructor(path: DataPath, node: Node) {
    this.path = path;
    this.node = node;
    this.size = node.size; // its own: a resize of the volume changes only the head
    this.preferredBlockSize = node.vol.chunkSize;
  }
  read(offset: number, length: number, into: Buffer): Promise<void> {
    return this.path.read(this.node, offset, length, into, 0);
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
