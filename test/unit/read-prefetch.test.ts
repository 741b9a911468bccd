// A slow synchronous read counts as a page-cache miss (src/storage/file-io.ts readNow: it may move
// reads to the pool, and prefetches its 64 KiB window) only when the process read from the disk
// since the last look (read-around.ts DiskReads): a slow read of cached data (the thread
// preempted) counts as fast and fetches nothing. Its own file: the read
// strategy and the read-around table are process-wide and must start synchronous and empty.
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { realFileIo } from '../../src/storage/file-io.ts';
import { readStrategy, SYNC_IO_RULE } from '../../src/storage/sync-io.ts';
import { DiskReads, diskReads, READ_AROUND, readAround } from '../../src/storage/read-around.ts';

const W = READ_AROUND.windowBytes;
/** Each clock look advances by this: every synchronous read takes it (slow, yet no stall). */
const SLOW_STEP_NS = 1_000_000n;
/** Turns of 2 ms to wait for a prefetch in the pool to land (it lands in well under one). */
const PREFETCH_WAIT_TURNS = 100;

describe('DiskReads', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'disk-reads-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('says whether read_bytes changed since the last look (the first at construction); an unreadable count passes for a miss', async () => {
    const path = join(dir, 'io');
    const io = (n: number): string => `rchar: 99\nwchar: 1\nsyscr: 3\nsyscw: 4\nread_bytes: ${n}\nwrite_bytes: 0\ncancelled_write_bytes: 0\n`;
    await writeFile(path, io(4096));
    const d = new DiskReads(path);
    expect(d.grew()).toBe(false);
    await writeFile(path, io(6144));
    expect(d.grew()).toBe(true);
    expect(d.grew()).toBe(false);
    await writeFile(path, io(8192));
    expect(d.grew()).toBe(true);
    expect(d.grew()).toBe(false);
    expect(new DiskReads(join(dir, 'absent')).grew()).toBe(true);
    await writeFile(path, 'no counts here\n');
    expect(new DiskReads(path).grew()).toBe(true);
  });

  it('keeps reading the file it opened at construction (one pread a look, no open per look)', async () => {
    const path = join(dir, 'io-kept');
    const io = (n: number): string => `rchar: 1\nread_bytes: ${n}\nwrite_bytes: 0\n`;
    await writeFile(path, io(4096));
    const d = new DiskReads(path);
    // Another file now has the name: a look that opened the path would see its count.
    await rename(path, join(dir, 'io-kept-old'));
    await writeFile(path, io(999_999));
    expect(d.grew()).toBe(false);
    await writeFile(join(dir, 'io-kept-old'), io(8192));
    expect(d.grew()).toBe(true);
    expect(d.grew()).toBe(false);
  });
});

describe('prefetch after a slow synchronous read', () => {
  let dir: string;
  let path: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'read-prefetch-'));
    path = join(dir, 'f');
    await writeFile(path, Buffer.alloc(8 * W, 7));
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** One synchronous 4 KiB read at `pos` that the clock sees take `stepNs`; then lets a prefetch land. */
  async function slowRead(pos: number, stepNs = SLOW_STEP_NS): Promise<void> {
    let t = 0n;
    vi.spyOn(process.hrtime, 'bigint').mockImplementation(() => (t += stepNs));
    const f = await realFileIo.open(path, 'r');
    try {
      expect(readStrategy.sync).toBe(true);
      const b = Buffer.alloc(4096);
      expect(await f.read(b, 0, 4096, pos)).toBe(4096);
      expect(b.every((x) => x === 7)).toBe(true);
      for (let i = 0; i < PREFETCH_WAIT_TURNS && remembered.length === 0; i++) await new Promise((r) => setTimeout(r, 2));
    } finally {
      vi.mocked(process.hrtime.bigint).mockRestore();
      await f.close();
    }
  }
  let remembered: number[] = [];

  it('fetches nothing when no disk read happened, the window when one did', async () => {
    remembered = [];
    vi.spyOn(readAround, 'remember').mockImplementation((_id, pos) => void remembered.push(Math.floor(pos / W)));
    const grew = vi.spyOn(diskReads, 'grew').mockReturnValue(false);
    await slowRead(2 * W + 4096);
    expect(remembered).toEqual([]);
    expect(grew).toHaveBeenCalledTimes(1);
    grew.mockReturnValue(true);
    await slowRead(5 * W + 8192);
    expect(grew).toHaveBeenCalledTimes(2);
    expect(remembered).toEqual([5]);
  });

  it('a stalled read counts only when the disk was read: a preempted hit leaves reads synchronous', async () => {
    const stall = BigInt(SYNC_IO_RULE.stallNs) * 2n;
    const grew = vi.spyOn(diskReads, 'grew').mockReturnValue(false);
    vi.spyOn(readAround, 'remember').mockImplementation(() => undefined);
    for (let i = 0; i < SYNC_IO_RULE.window; i++) await slowRead(7 * W, stall);
    expect(grew).toHaveBeenCalledTimes(SYNC_IO_RULE.window);
    expect(readStrategy.sync).toBe(true);
    grew.mockReturnValue(true);
    await slowRead(7 * W, stall);
    expect(readStrategy.sync).toBe(false);
  });
});
