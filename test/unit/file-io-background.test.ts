// Maintenance reads (IoFile.read's `background`: a compaction pass, a partial slot's merge) run in
// libuv's thread pool even while client reads of cached data are done at once on the event loop:
// a maintenance read that misses the page cache must not hold the loop (src/storage/file-io.ts).
import { pbkdf2 } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { realFileIo } from '../../src/storage/file-io.ts';
import { readStrategy } from '../../src/storage/sync-io.ts';

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

describe('maintenance reads', () => {
  it('go to the pool, while a client read of cached data is done before read() returns', async () => {
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
});
