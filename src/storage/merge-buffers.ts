// Whole-chunk buffers for the data path's merges (a partial first write to a chunk is merged with
// the chunk's old content into a whole one, data-path.ts). One fresh 64 KiB ArrayBuffer per merge
// was the largest allocation of a 4 KiB random write: outside the V8 heap, freed only by a garbage
// collection, so the merges of a write burst drove most of its collections, major ones included
// (bench/README.md, "Random writes against 52bfdf4"). Buffers go back here once their write
// landed and are handed out again; a merge overwrites every byte of the one it takes.

import { IdleLists } from '../util/idle-lists.ts';

/** Bytes of idle buffers kept per store: 32 chunks of the default 64 KiB, a full queue of merges. */
export const MERGE_BUFFERS_KEPT_BYTES = 2 * 1024 * 1024;

export class MergeBuffers {
  private readonly idle = new IdleLists<Buffer>(MERGE_BUFFERS_KEPT_BYTES);

  /** A buffer of `chunkSize` bytes with arbitrary content. */
  take(chunkSize: number): Buffer {
    return this.idle.take(chunkSize) ?? Buffer.allocUnsafeSlow(chunkSize);
  }

  /**
   * Gives back buffers from `take` that no I/O uses any more (the caller's writes have settled);
   * kept while under MERGE_BUFFERS_KEPT_BYTES, else left to the garbage collector.
   */
  give(buf: Buffer): void {
    this.idle.put(buf.length, buf);
  }
}
