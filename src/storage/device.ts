// The one interface between the NBD server and storage. The server knows only this; a volume
// head (a clone's head too) and a read-only snapshot view implement it (src/storage/devices.ts),
// as do the read-only wrapper of src/volumes/read-only-device.ts and the tests' memory device.
import type { Gather } from '../util/gather.ts';

/** One run of the address space as block status reports it (`base:allocation`). */
export interface Extent {
  length: number;
  /** Not allocated in this device (reads as backing data or zeros). NBD_STATE_HOLE. */
  hole: boolean;
  /** Reads as zeros. NBD_STATE_ZERO. */
  zero: boolean;
}

/** Appends a run to `out`, merged into the last extent when that one is of the same kind. */
export function appendExtent(out: Extent[], length: number, hole: boolean, zero: boolean): void {
  const last = out[out.length - 1];
  if (last && last.hole === hole && last.zero === zero) last.length += length;
  else out.push({ length, hole, zero });
}

export interface WriteOptions {
  /** Durable before the promise resolves (NBD_CMD_FLAG_FUA). */
  fua: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The range must stay allocated (NBD_CMD_FLAG_NO_HOLE). */
  noHole: boolean;
  /** Fail with ENOTSUP unless zeroing is faster than writing zeros (NBD_CMD_FLAG_FAST_ZERO). */
  fast: boolean;
}

export interface BlockDevice {
  /** Virtual size in bytes. */
  readonly size: number;
  readonly readOnly: boolean;
  /** Preferred I/O size (power of two, >= 512): the chunk size for engine devices. */
  readonly preferredBlockSize: number;
  /** Whether all connections to this device see one cache (NBD_FLAG_CAN_MULTI_CONN). */
  readonly multiConn: boolean;

  /** Read `length` bytes at `offset` into `into` (at `into[0]`); `into.length >= length`. */
  read(offset: number, length: number, into: Buffer): Promise<void>;
  /** `data` may be a view into a pooled buffer: copy it if it must outlive the call. */
  write(offset: number, data: Buffer, opts: WriteOptions): Promise<void>;
  /**
   * The same for bytes in several pieces (a payload as the socket delivered it, util/gather.ts),
   * `length` in all; without it the server joins the pieces and calls `write`.
   */
  writeGather?(offset: number, pieces: Gather, length: number, opts: WriteOptions): Promise<void>;
  /** Advisory discard: afterwards the range reads as zeros or as the previous contents' backing. */
  trim(offset: number, length: number, opts: WriteOptions): Promise<void>;
  zero(offset: number, length: number, opts: ZeroOptions): Promise<void>;
  /** Every write resolved before this call is durable when this resolves. */
  flush(): Promise<void>;
  /** Prefetch hint; must not change what reads return. */
  cache(offset: number, length: number): Promise<void>;
  /**
   * Allocation of [offset, offset+length): consecutive extents starting at `offset`, each with
   * length > 0, covering at least the first byte. They may stop short of `offset+length`.
   */
  extents(offset: number, length: number): Promise<Extent[]>;
}

/**
 * A storage fault carries a Node errno code ('ENOSPC', 'EIO', 'EROFS', ...); the server maps it to
 * an NBD errno and logs the cause.
 */
export class StorageError extends Error {
  readonly errno: string;
  constructor(errno: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StorageError';
    this.errno = errno;
  }
}

/**
 * A control operation's change is in effect but its commit failed: it stays, and the next
 * successful commit makes it durable (the caller must not assume it did not happen).
 */
export class UncommittedChangeError extends StorageError {
  constructor(errno: string, message: string, options?: { cause?: unknown }) {
    super(errno, message, options);
    this.name = 'UncommittedChangeError';
  }
}
