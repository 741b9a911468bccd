// Block-sized buffers reused across the blocks of one backup or restore: a 1 MiB allocation per
// block (and its garbage) was a large part of the event loop's time in a restore
// (bench/README.md "Full restore against restic: where the CPU goes"). Each buffer owns its whole
// ArrayBuffer (never a slice of Node's shared pool), so the hash pool can transfer it to a worker
// and back; what comes back is another Buffer over the same memory, which give() takes.

export class BlockBuffers {
  private readonly free: Buffer[] = [];
  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /** A buffer of `capacity` bytes, contents undefined. */
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.capacity);
  }

  /** Returns the memory under `b` (any view of a buffer take() gave) once nothing uses it. */
  give(b: Buffer): void {
    const ab = b.buffer;
    if (ab.byteLength === this.capacity && !(ab instanceof SharedArrayBuffer)) this.free.push(Buffer.from(ab));
  }
}
