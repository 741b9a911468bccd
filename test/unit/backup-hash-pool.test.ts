// The hash pool: worker threads hash a block whose memory is transferred there and back.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { HASH_OFFLOAD_MIN_BYTES, HashPool } from '../../src/backup/hash-pool.ts';
import { BlockBuffers } from '../../src/backup/block-buffers.ts';

const pool = new HashPool(2);
afterAll(() => pool.close());

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('hash pool', () => {
  it('hashes in a worker: the same digest, the same memory back, the Buffer passed in detached', async () => {
    const b = Buffer.allocUnsafeSlow(1024 * 1024);
    randomBytes(b.length).copy(b);
    const want = sha(b);
    const copy = Buffer.from(b);
    const r = await pool.hash(b);
    expect(r.hex).toBe(want);
    expect(b.length).toBe(0); // moved to the worker: it did not hash a copy here
    expect(r.data.length).toBe(copy.length);
    expect(r.data.equals(copy)).toBe(true);
  });

  it('HMAC with a key, over a plain ArrayBuffer', async () => {
    const key = randomBytes(32);
    const ab = new ArrayBuffer(HASH_OFFLOAD_MIN_BYTES * 4);
    const b = Buffer.from(ab, 0, ab.byteLength);
    randomBytes(b.length).copy(b);
    const want = createHmac('sha256', key).update(b).digest('hex');
    const r = await pool.hash(b, key);
    expect(r.hex).toBe(want);
    expect(ab.byteLength).toBe(0); // transferred
    expect(r.data.buffer.byteLength).toBe(HASH_OFFLOAD_MIN_BYTES * 4);
  });

  it('a view into shared memory or a small buffer is hashed on this thread and left usable', async () => {
    const big = randomBytes(HASH_OFFLOAD_MIN_BYTES * 3);
    const view = big.subarray(100, 100 + HASH_OFFLOAD_MIN_BYTES * 2);
    const r = await pool.hash(view);
    expect(r.hex).toBe(sha(view));
    expect(view.length).toBe(HASH_OFFLOAD_MIN_BYTES * 2);
    expect(r.data).toBe(view);
    const small = randomBytes(100);
    expect((await pool.hash(small)).hex).toBe(sha(small));
  });

  it('many at once over two workers: every digest matches its block', async () => {
    const blocks = Array.from({ length: 32 }, (_, i) => { const b = Buffer.allocUnsafeSlow(256 * 1024); b.fill(i); return b; });
    const want = blocks.map(sha);
    const got = await Promise.all(blocks.map((b) => pool.hash(b)));
    expect(got.map((r) => r.hex)).toEqual(want);
    got.forEach((r, i) => expect(r.data[0]).toBe(i));
  });

  it('block buffers: memory given back is taken again, foreign memory is not kept', () => {
    const bb = new BlockBuffers(4096);
    const a = bb.take();
    bb.give(a.subarray(0, 100));
    const b = bb.take();
    expect(b.buffer === a.buffer).toBe(true);
    expect(b.length).toBe(4096);
    bb.give(Buffer.alloc(10));
    expect(bb.take().buffer === a.buffer).toBe(false);
  });
});
