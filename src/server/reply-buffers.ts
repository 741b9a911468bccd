// READ reply buffers too long for a connection's slab, reused once the kernel has their reply.
// A fresh 1 MiB buffer per READ came from malloc, was page-faulted in by the read that filled it
// and given back at a later GC: 63,737 minor faults per GiB of 1 MiB sequential reads, 243 with
// the pool, where nbdkit, which keeps its buffers, takes ~170 (bench/README.md, "Reply buffers").
// One pool for the process (the event loop is one thread); only idle buffers count against its
// cap, those in flight are charged to the connections' memory budget at their class's size.

import { IdleLists } from '../util/idle-lists.ts';

/**
 * Reads up to this long take their reply buffer from the connection's slab (dispatch.ts):
 * Buffer.allocUnsafe pools only below 4 KiB, so each 4 KiB read made an ArrayBuffer of its own
 * (malloc, external memory accounting, a free at the next GC). Per connection, so a client that
 * leaves its replies unread pins only its own slab.
 */
export const SLAB_READ_MAX = 16 * 1024;
/** Reads up to this long share a pooled buffer; longer ones get their own, as before. */
export const POOLED_REPLY_MAX = 4 * 1024 * 1024;
/** The smallest size class: shorter reads live in the connection's slab (dispatch.ts). */
export const POOLED_REPLY_MIN_CLASS = 32 * 1024;
/** Idle bytes the pool keeps; a buffer given back beyond them is left to the GC. */
export const REPLY_POOL_IDLE_MAX = 32 * 1024 * 1024;

/** Whether a READ of `length` takes its buffer from the pool (shorter ones use the slab). */
export function isPooledRead(length: number): boolean {
  return length > SLAB_READ_MAX && length <= POOLED_REPLY_MAX;
}

/** The memory a READ's reply holds: its pooled buffer's class, else its length. */
export function readReplyBytes(length: number): number {
  return isPooledRead(length) ? replyClass(length) : length;
}

/** The size class of a read: the power of two that holds it. */
export function replyClass(length: number): number {
  let c = POOLED_REPLY_MIN_CLASS;
  while (c < length) c *= 2;
  return c;
}

export class ReplyBufferPool {
  private readonly free: IdleLists<ArrayBuffer>;
  /** Which ArrayBuffers sit in `free`: a buffer given back twice would go to two readers. */
  private readonly idle = new WeakSet<ArrayBuffer>();

  constructor(idleMax = REPLY_POOL_IDLE_MAX) {
    this.free = new IdleLists(idleMax);
  }

  /** A buffer of exactly `length` bytes (≤ POOLED_REPLY_MAX), a view of a pooled one. */
  take(length: number): Buffer {
    const size = replyClass(length);
    const ab = this.free.take(size);
    if (ab === undefined) return Buffer.allocUnsafeSlow(size).subarray(0, length);
    this.idle.delete(ab);
    return Buffer.from(ab, 0, length);
  }

  /** Gives back a buffer from take() whose reply the kernel has; nothing may use it after. */
  give(buf: Buffer): void {
    const ab = buf.buffer as ArrayBuffer;
    const size = ab.byteLength;
    if (buf.byteOffset !== 0 || size !== replyClass(size) || size > POOLED_REPLY_MAX || this.idle.has(ab)) return;
    if (this.free.put(size, ab)) this.idle.add(ab);
  }

  /** Idle bytes kept (tests, stats). */
  get bytesIdle(): number {
    return this.free.bytes;
  }
}

/** The process's pool. */
export const replyBuffers = new ReplyBufferPool();

/** ReplyWriter's onRecycled for the process's pool. */
export function giveReplyBuffers(buffers: Buffer[]): void {
  for (const b of buffers) replyBuffers.give(b);
}
