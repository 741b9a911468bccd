// A plain raw file as a block device: no copy-on-write, no snapshots. The speed baseline for the
// benchmark, and what tests use to exercise the server without the engine. Extents come from the
// file's holes where the filesystem reports them (SEEK_DATA is not in Node, so: all data).
import { open, type FileHandle } from 'node:fs/promises';
import { StorageError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions } from './device.ts';

const ZERO_BUF_LEN = 1024 * 1024;

export class RawFileDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly: boolean;
  readonly preferredBlockSize = 4096;
  readonly multiConn = true;
  private readonly fh: FileHandle;
  private zeroes: Buffer | null = null;

  private constructor(fh: FileHandle, size: number, readOnly: boolean) {
    this.fh = fh;
    this.size = size;
    this.readOnly = readOnly;
  }

  /** Opens (creating with `size` when missing) a raw file. */
  static async open(path: string, opts: { readOnly: boolean; size?: number }): Promise<RawFileDevice> {
    const fh = await open(path, opts.readOnly ? 'r' : opts.size !== undefined ? 'a+' : 'r+').catch((e: unknown) => {
      throw new StorageError((e as NodeJS.ErrnoException).code ?? 'EIO', `cannot open ${path}`, { cause: e });
    });
    // 'a+' appends on write on Linux; reopen r+ once the file exists.
    let handle = fh;
    if (!opts.readOnly && opts.size !== undefined) {
      await fh.close();
      handle = await open(path, 'r+');
      const st = await handle.stat();
      if (st.size < opts.size) await handle.truncate(opts.size);
    }
    const { size } = await handle.stat();
    return new RawFileDevice(handle, size, opts.readOnly);
  }

  async read(offset: number, length: number, into: Buffer): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(into, done, length - done, offset + done);
      if (bytesRead === 0) {
        into.fill(0, done, length);
        return;
      }
      done += bytesRead;
    }
  }

  async write(offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
    this.checkWritable();
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
    if (opts.fua) await this.fh.datasync();
  }

  async trim(offset: number, length: number, opts: WriteOptions): Promise<void> {
    // Node cannot punch holes; TRIM is advisory, so zeroing keeps reads defined.
    await this.zero(offset, length, { ...opts, noHole: true, fast: false });
  }

  async zero(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    this.checkWritable();
    if (opts.fast) throw new StorageError('ENOTSUP', 'a raw file cannot zero faster than it writes');
    this.zeroes ??= Buffer.alloc(ZERO_BUF_LEN);
    for (let pos = 0; pos < length; pos += ZERO_BUF_LEN) {
      const n = Math.min(ZERO_BUF_LEN, length - pos);
      await this.write(offset + pos, this.zeroes.subarray(0, n), { fua: false });
    }
    if (opts.fua) await this.fh.datasync();
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.fh.datasync();
  }

  async cache(): Promise<void> {}

  async extents(_offset: number, length: number): Promise<Extent[]> {
    return [{ length, hole: false, zero: false }];
  }

  async close(): Promise<void> {
    await this.fh.close();
  }

  private checkWritable(): void {
    if (this.readOnly) throw new StorageError('EROFS', 'device is read-only');
  }
}
