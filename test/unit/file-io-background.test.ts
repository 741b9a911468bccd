// Maintenance I/O (IoFile.read's and write's `background`: a compaction pass, a partial slot's
// merge, a bulk copy of a snapshot) runs in libuv's thread pool even while client I/O the page
// cache absorbs is done at once on the event loop: a maintenance read that misses the page cache,
// or a bulk write the kernel throttles, must not hold the loop (src/storage/file-io.ts).
import { pbkdf2 } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { realFileIo } from '../../src/storage/file-io.ts';
import { readStrategy, writeStrategy } from '../../src/storage/sync-io.ts';

const KiB = 1024;
/** libuv's pool: UV_THREADPOOL_SIZE threads, 4 unless set. */
const POOL_THREADS = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
/** Enough key derivation to keep a pool thread busy well past the checks below (~0.1-1 s). */
const BUSY_ITERATIONS = 300_000;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-bgread-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Occupies every pool thread; resolves when they are free again. */
function occupyPool(): Promise<unknown> {
  const jobs: Promise<void>[] = [];
  for (let i = 0; i < POOL_THREADS; i++) {
    jobs.push(new Promise((res, rej) => pbkdf2('k', 's', BUSY_ITERATIONS, 32, 'sha256', (e) => (e ? rej(e) : res()))));
  }
  return Promise.all(jobs);
}

describe('maintenance I/O', () => {
  it('reads go to the pool, while a client read of cached data is done before read() returns', async () => {
    const path = join(dir, 'seg');
    const data = Buffer.alloc(256 * KiB);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 3) & 0xff;
    await writeFile(path, data); // its pages are in the page cache now
    const f = await realFileIo.open(path, 'r');
    try {
      expect(readStrategy.sync).toBe(true); // a fresh process reads synchronously
      // The pool is busy, so nothing it is given can finish while this turn runs.
      const busy = occupyPool();
      const client = Buffer.alloc(4 * KiB);
      const pc = f.read(client, 0, client.length, 8 * KiB);
      expect(client.equals(data.subarray(8 * KiB, 12 * KiB))).toBe(true); // filled at once, on the loop
      const pieces = [0, 4 * KiB, 60 * KiB, 128 * KiB].map((pos) => {
        const into = Buffer.alloc(4 * KiB);
        return { pos, into, done: f.read(into, 0, into.length, pos, true) };
      });
      for (const p of pieces) expect(p.into.every((b) => b === 0), `maintenance read at ${p.pos} done on the loop`).toBe(true);
      expect(await pc).toBe(client.length);
      await busy;
      for (const p of pieces) {
        expect(await p.done).toBe(p.into.length);
        expect(p.into.equals(data.subarray(p.pos, p.pos + p.into.length))).toBe(true);
      }
      expect(readStrategy.sync).toBe(true); // and they left the client rule alone
    } finally {
      await f.close();
    }
  });

  it('writes go to the pool, while a client write is done before write() returns', async () => {
    const path = join(dir, 'seg');
    await writeFile(path, Buffer.alloc(64 * KiB));
    const f = await realFileIo.open(path, 'rw');
    try {
      expect(writeStrategy.sync).toBe(true); // a fresh process writes synchronously
      const at = (pos: number): Buffer => readFileSync(path).subarray(pos, pos + 4 * KiB);
      const busy = occupyPool();
      const pc = f.write(Buffer.alloc(4 * KiB, 1), 0, 4 * KiB, 0);
      expect(at(0).every((b) => b === 1)).toBe(true); // landed at once, on the loop
      const pb = f.write(Buffer.alloc(4 * KiB, 2), 0, 4 * KiB, 16 * KiB, true);
      const pv = f.writev([Buffer.alloc(2 * KiB, 3), Buffer.alloc(2 * KiB, 3)], 32 * KiB, true);
      expect(at(16 * KiB).every((b) => b === 0), 'maintenance write done on the loop').toBe(true);
      expect(at(32 * KiB).every((b) => b === 0), 'maintenance writev done on the loop').toBe(true);
      await pc;
      await busy;
      await pb;
      await pv;
      expect(at(16 * KiB).every((b) => b === 2)).toBe(true);
      expect(at(32 * KiB).every((b) => b === 3)).toBe(true);
    } finally {
      await f.close();
    }
  });
});
