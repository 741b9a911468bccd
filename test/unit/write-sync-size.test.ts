// Which writes the event loop does at once (src/storage/sync-io.ts SYNC_IO_RULE.syncWriteMaxBytes):
// writes up to 1 MiB while the write strategy is synchronous, larger ones and any write while
// the strategy sends writes to the pool through libuv's pool. A write done at once has already
// settled a few microtasks after the call; a pool write cannot settle before the loop's next poll.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { realFileIo, type IoFile } from '../../src/storage/file-io.ts';
import { SYNC_IO_RULE, writeStrategy } from '../../src/storage/sync-io.ts';

const PIECE = 64 * 1024;

/** Whether `p` settled within a few microtasks, i.e. without waiting for the loop's I/O phase. */
async function settledAtOnce(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  const watched = p.then(() => { done = true; });
  for (let i = 0; i < 5; i++) await Promise.resolve();
  const atOnce = done;
  await watched;
  return atOnce;
}

/**
 * Puts the process's write strategy back in synchronous mode if a slow write on this busy machine
 * (two over `stallNs` in a row) sent writes to the pool: fast probes until it switches back.
 */
function syncAgain(): void {
  const until = performance.now() + 10_000;
  while (!writeStrategy.sync && performance.now() < until) if (writeStrategy.next()) writeStrategy.record(1000, 4096);
  expect(writeStrategy.sync).toBe(true);
}

function pieces(bytes: number, seed: number): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < bytes; off += PIECE) out.push(Buffer.alloc(Math.min(PIECE, bytes - off), (seed + off / PIECE) & 0xff));
  return out;
}

describe('file-io: synchronous writes up to syncWriteMaxBytes', () => {
  let dir: string;
  let path: string;
  let f: IoFile;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'write-sync-size-'));
    path = join(dir, 'data');
    f = await realFileIo.open(path, 'create');
  });
  afterAll(async () => {
    await f.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('does a 1 MiB gathered write and a 1 MiB single write at once, with the right bytes', async () => {
    expect(SYNC_IO_RULE.syncWriteMaxBytes).toBe(1024 * 1024);
    syncAgain();
    const a = pieces(SYNC_IO_RULE.syncWriteMaxBytes, 1);
    syncAgain();
    expect(await settledAtOnce(f.writev(a, 0))).toBe(true);
    const b = Buffer.alloc(SYNC_IO_RULE.syncWriteMaxBytes, 0x5a);
    syncAgain();
    expect(await settledAtOnce(f.write(b, 0, b.length, SYNC_IO_RULE.syncWriteMaxBytes))).toBe(true);
    const file = await readFile(path);
    expect(file.subarray(0, a.length * PIECE).equals(Buffer.concat(a))).toBe(true);
    expect(file.subarray(SYNC_IO_RULE.syncWriteMaxBytes).equals(b)).toBe(true);
  });

  it('sends a write larger than syncWriteMaxBytes to the pool, with the right bytes', async () => {
    syncAgain();
    const big = pieces(SYNC_IO_RULE.syncWriteMaxBytes + PIECE, 7);
    const pos = 4 * SYNC_IO_RULE.syncWriteMaxBytes;
    expect(await settledAtOnce(f.writev(big, pos))).toBe(false);
    const file = await readFile(path);
    expect(file.subarray(pos).equals(Buffer.concat(big))).toBe(true);
  });

  it('sends a 1 MiB write to the pool while the strategy is in pool mode (after two close stalls)', async () => {
    for (let i = 0; i < 2; i++) {
      writeStrategy.next();
      writeStrategy.record(SYNC_IO_RULE.stallNs + 1, PIECE);
    }
    expect(writeStrategy.sync).toBe(false);
    const a = pieces(SYNC_IO_RULE.syncWriteMaxBytes, 3);
    expect(await settledAtOnce(f.writev(a, 8 * SYNC_IO_RULE.syncWriteMaxBytes))).toBe(false);
    const file = await readFile(path);
    expect(file.subarray(8 * SYNC_IO_RULE.syncWriteMaxBytes, 9 * SYNC_IO_RULE.syncWriteMaxBytes).equals(Buffer.concat(a))).toBe(true);
  });
});
