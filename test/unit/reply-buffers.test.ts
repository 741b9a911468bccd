// The process's pool of long READ reply buffers: a buffer given back is the next one taken of its
// size class (the same memory, no new allocation), idle bytes stay under the cap, and nothing
// that did not come from the pool, or comes back twice, is ever handed out again.
import { describe, expect, it } from 'vitest';
import { isPooledRead, POOLED_REPLY_MAX, POOLED_REPLY_MIN_CLASS, readReplyBytes, ReplyBufferPool, replyClass, SLAB_READ_MAX } from '../../src/server/reply-buffers.ts';

const MiB = 1024 * 1024;

describe('ReplyBufferPool', () => {
  it('hands back the same memory for the same size class, a view of exactly the length asked', () => {
    const pool = new ReplyBufferPool();
    const a = pool.take(MiB);
    expect(a.length).toBe(MiB);
    pool.give(a);
    expect(pool.bytesIdle).toBe(MiB);
    const b = pool.take(MiB - 4096); // same class
    expect(b.length).toBe(MiB - 4096);
    expect(b.buffer).toBe(a.buffer);
    expect(pool.bytesIdle).toBe(0);
    const c = pool.take(MiB); // the class is empty again: new memory
    expect(c.buffer).not.toBe(a.buffer);
  });

  it('sizes classes as powers of two from the smallest class up', () => {
    expect(replyClass(1)).toBe(POOLED_REPLY_MIN_CLASS);
    expect(replyClass(POOLED_REPLY_MIN_CLASS + 1)).toBe(2 * POOLED_REPLY_MIN_CLASS);
    expect(replyClass(MiB)).toBe(MiB);
    expect(replyClass(MiB + 1)).toBe(2 * MiB);
    expect(replyClass(POOLED_REPLY_MAX)).toBe(POOLED_REPLY_MAX);
  });

  it('charges a pooled read its class, others their length', () => {
    expect([isPooledRead(SLAB_READ_MAX), isPooledRead(SLAB_READ_MAX + 1), isPooledRead(POOLED_REPLY_MAX), isPooledRead(POOLED_REPLY_MAX + 1)]).toEqual([false, true, true, false]);
    expect(readReplyBytes(4096)).toBe(4096);
    expect(readReplyBytes(2 * MiB + 1)).toBe(4 * MiB);
    expect(readReplyBytes(POOLED_REPLY_MAX + 1)).toBe(POOLED_REPLY_MAX + 1);
  });

  it('keeps no more idle bytes than its cap', () => {
    const pool = new ReplyBufferPool(3 * MiB);
    const bufs = Array.from({ length: 5 }, () => pool.take(MiB));
    for (const b of bufs) pool.give(b);
    expect(pool.bytesIdle).toBe(3 * MiB);
  });

  it('ignores a buffer given back twice, and buffers it never made', () => {
    const pool = new ReplyBufferPool();
    const a = pool.take(MiB);
    pool.give(a);
    pool.give(a);
    expect(pool.bytesIdle).toBe(MiB);
    const x = pool.take(MiB);
    const y = pool.take(MiB);
    expect(x.buffer).not.toBe(y.buffer); // two readers never share memory
    pool.give(Buffer.alloc(MiB + 7)); // not a class size
    pool.give(Buffer.allocUnsafeSlow(2 * MiB).subarray(4096)); // not from the start of its memory
    pool.give(Buffer.allocUnsafeSlow(2 * POOLED_REPLY_MAX)); // beyond the largest class
    expect(pool.bytesIdle).toBe(0);
  });
});
