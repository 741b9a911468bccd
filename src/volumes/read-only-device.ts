// A read-only face on a writable device, for `serve --read-only`: the server refuses writes to a
// read-only export before they get here, this makes sure nothing slips through anyway.
import { StorageError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions } from '../storage/device.ts';

export class ReadOnlyDevice implements BlockDevice {
  readonly readOnly = true;
  private readonly inner: BlockDevice;

  constructor(inner: BlockDevice) {
    this.inner = inner;
  }

  get size(): number { return this.inner.size; }
  get preferredBlockSize(): number { return this.inner.preferredBlockSize; }
  get multiConn(): boolean { return this.inner.multiConn; }

  read(offset: number, length: number, into: Buffer): Promise<void> { return this.inner.read(offset, length, into); }
  write(_offset: number, _data: Buffer, _opts: WriteOptions): Promise<void> { return refuse(); }
  trim(_offset: number, _length: number, _opts: WriteOptions): Promise<void> { return refuse(); }
  zero(_offset: number, _length: number, _opts: ZeroOptions): Promise<void> { return refuse(); }
  flush(): Promise<void> { return Promise.resolve(); }
  cache(offset: number, length: number): Promise<void> { return this.inner.cache(offset, length); }
  extents(offset: number, length: number): Promise<Extent[]> { return this.inner.extents(offset, length); }
}

function refuse(): Promise<void> {
  return Promise.reject(new StorageError('EROFS', 'export is read-only'));
}
