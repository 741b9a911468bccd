// Read-around (src/storage/read-around.ts): while reads go to the pool, a small read fetches its
// whole aligned window, remembers it, and later reads inside it run synchronously; it turns off
// when the reads have no locality. And the windowed reads return exactly the bytes asked for.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { realFileIo } from '../../src/storage/file-io.ts';
import { readStrategy, SYNC_IO_RULE } from '../../src/storage/sync-io.ts';
import { READ_AROUND, readAround, ReadAroundRule, ReadPlan } from '../../src/storage/read-around.ts';

const W = READ_AROUND.windowBytes;

describe('ReadAroundRule', () => {
  it('reads a new window whole, then knows it cached until told otherwise', () => {
    const r = new ReadAroundRule();
    expect(r.plan(1, 5 * W + 4096)).toBe(ReadPlan.Around);
    r.remember(1, 5 * W + 4096);
    expect(r.plan(1, 5 * W)).toBe(ReadPlan.Cached);
    expect(r.plan(1, 6 * W - 4096)).toBe(ReadPlan.Cached);
    expect(r.plan(1, 6 * W)).toBe(ReadPlan.Around);
    expect(r.plan(2, 5 * W)).toBe(ReadPlan.Around); // another file
    r.forget(1, 5 * W + 100);
    expect(r.plan(1, 5 * W)).toBe(ReadPlan.Around);
  });

  it('asks for a prefetch after a slow synchronous read only for a window it does not hold', () => {
    const r = new ReadAroundRule();
    expect(r.prefetch(1, 7 * W + 4096)).toBe(true);
    r.remember(1, 7 * W + 4096);
    expect(r.prefetch(1, 7 * W)).toBe(false);
    r.on = false;
    expect(r.prefetch(1, 9 * W)).toBe(false);
  });

  it('stays on while reads come back to remembered windows', () => {
    const r = new ReadAroundRule();
    // 16384 windows (a 1 GiB file) read at random: a good part of the reads land in remembered ones.
    let x = 1;
    for (let i = 0; i < 20 * READ_AROUND.minRemembered; i++) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      const pos = (x % 16384) * W;
      if (r.plan(1, pos) === ReadPlan.Around) r.remember(1, pos);
    }
    expect(r.on).toBe(true);
  });

  it('turns off when reads never come back, and tries again for one period in retryEvery', () => {
    const r = new ReadAroundRule();
    let w = 0;
    const fresh = (): ReadPlan => {
      const pos = w++ * W;
      const p = r.plan(1, pos);
      if (p === ReadPlan.Around) r.remember(1, pos);
      return p;
    };
    // On until enough windows were remembered to judge, then off at the next decision.
    for (let i = 0; i < READ_AROUND.minRemembered; i++) expect(fresh()).toBe(ReadPlan.Around);
    for (let i = 0; i < READ_AROUND.judgeEvery; i++) fresh();
    expect(r.on).toBe(false);
    let around = 0;
    const periods = READ_AROUND.retryEvery * 3;
    for (let i = 0; i < periods * READ_AROUND.judgeEvery; i++) if (fresh() === ReadPlan.Around) around++;
    expect(around).toBe(3 * READ_AROUND.judgeEvery);
    expect(r.on).toBe(false);
  });
});

describe('windowed reads through the real file layer', () => {
  let dir: string;
  let path: string;
  const size = 3 * W + 1000; // the last window is short
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'read-around-'));
    path = join(dir, 'f');
    await writeFile(path, data);
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await rm(dir, { recursive: true, force: true });
  });

  /** Sends the next reads to the pool: one stalled read holds the synchronous mode off for a while. */
  function poolMode(): void {
    readStrategy.next();
    readStrategy.record(SYNC_IO_RULE.stallNs + 1, 4096);
    expect(readStrategy.sync).toBe(false);
  }

  it('returns the bytes asked for, short at the end of the file, from a window read whole', async () => {
    const remember = vi.spyOn(readAround, 'remember');
    const f = await realFileIo.open(path, 'r');
    try {
      const cases: [number, number][] = [
        [W + 4096, 4096], [W + 4096 + 512, 512], [W, W], [2 * W - 100, 100], [W - 100, 200], // the last crosses two windows
        [3 * W + 512, 4096], [3 * W + 900, 100], [3 * W + 1000, 4096], [size + 4096, 4096], [0, 1],
      ];
      for (const [pos, len] of cases) {
        poolMode();
        const b = Buffer.alloc(len, 0xee);
        const n = await f.read(b, 0, len, pos);
        const want = data.subarray(Math.min(pos, size), Math.min(pos + len, size));
        expect(n, `read ${len} at ${pos}`).toBe(want.length);
        expect(b.subarray(0, n).equals(want), `read ${len} at ${pos}`).toBe(true);
      }
      // Windows 1 and 3 (the short one) and 0 were read whole (again if a synchronous read in one
      // was slow on this busy machine and made it forgotten); the read crossing 0|1 was not.
      expect([...new Set(remember.mock.calls.map(([, p]) => Math.floor(p / W)))].sort()).toEqual([0, 1, 3]);
    } finally {
      await f.close();
    }
  });
});
