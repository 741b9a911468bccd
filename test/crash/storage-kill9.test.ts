// Real crashes: a child process writes and flushes continuously and is killed with SIGKILL at a
// random moment; the store must reopen, every write answered before the last answered flush must
// read back, no block may show data written for another block, answered snapshots must exist,
// and the offline check must be clean after the reopen reclaimed leaks.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/storage/index.ts';
import { checkStore } from '../../src/storage/check.ts';
import { BLOCK, BLOCKS, MAGIC, blockContent } from './storage-kill-writer.ts';

const ROUNDS = Number(process.env['KILL_ROUNDS'] ?? 100);
const children = new Set<ReturnType<typeof spawn>>();
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

interface Round { acked: number; writes: { block: number; c: number; trim: boolean }[]; issued: { block: number; c: number; trim: boolean }[]; snaps: Set<string>; deleted: Set<string> }

function runChild(dir: string, counter: number, seed: number, killAfterMs: number): Promise<Round> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'storage-kill-writer.ts'), dir, String(counter), String(seed)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.add(child);
    const r: Round = { acked: -1, writes: [], issued: [], snaps: new Set(), deleted: new Set() };
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const [k, a, b] = line.split(' ');
      if (k === 'ready') setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      else if (k === 'I' || k === 'Z') r.issued.push({ block: Number(a), c: Number(b), trim: k === 'Z' });
      else if (k === 'W' || k === 'T') r.writes.push({ block: Number(a), c: Number(b), trim: k === 'T' });
      else if (k === 'F') r.acked = Number(a);
      else if (k === 'S') r.snaps.add(a!);
      else if (k === 'X') r.snaps.delete(a!); // an unanswered delete may have committed
      else if (k === 'D') r.deleted.add(a!);
    });
    child.on('error', reject);
    child.on('exit', () => {
      children.delete(child);
      rl.close();
      resolve(r);
    });
  });
}

describe('kill -9 during continuous writes and flushes', () => {
  it(`${ROUNDS} rounds`, async () => {
    const root = await mkdtemp(join(tmpdir(), 'snapnbd-kill-'));
    const dir = join(root, 'store');
    try {
      // expected[block] = the counter of the newest write answered before an answered flush
      // (0 = never written or trimmed); allowed newer: anything written later.
      const durable = new Array<number>(BLOCKS).fill(0);
      const snapsSeen = new Set<string>();
      let counter = 0;
      let seed = 12345;
      let flushesAcked = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const r = await runChild(dir, counter, seed++, 20 + ((round * 37) % 250));
        const later = new Map<number, Set<number>>(); // block -> counters written after the ack (or unacked)
        for (const w of r.issued) counter = Math.max(counter, w.c);
        for (const w of r.writes) {
          if (w.c <= r.acked) durable[w.block] = w.trim ? 0 : w.c;
        }
        for (const w of r.issued) if (w.c > r.acked) {
          let s = later.get(w.block);
          if (!s) later.set(w.block, (s = new Set()));
          s.add(w.trim ? 0 : w.c);
        }
        if (r.acked >= 0) flushesAcked++;
        const store = await openStore(dir, { commitIntervalMs: 0 });
        try {
          const snaps = new Set(store.listSnapshots('v').map((s) => s.name));
          for (const s of r.snaps) expect(snaps.has(s), `answered snapshot ${s} survives`).toBe(true);
          // An answered delete is durable.
          for (const s of r.deleted) expect(snaps.has(s), `answered delete of ${s} survives`).toBe(false);
          for (const s of snaps) snapsSeen.add(s);
          const buf = Buffer.alloc(BLOCK * BLOCKS);
          await store.head('v').read(0, buf.length, buf);
          for (let b = 0; b < BLOCKS; b++) {
            const blk = buf.subarray(b * BLOCK, (b + 1) * BLOCK);
            let found: number;
            if (blk.every((x) => x === 0)) found = 0;
            else {
              expect(blk.readUInt32LE(0), `round ${round} block ${b} magic`).toBe(MAGIC);
              expect(blk.readUInt32LE(4), `round ${round} block ${b} holds another block's data`).toBe(b);
              found = blk.readUInt32LE(8);
              expect(blk.equals(blockContent(b, found)), `round ${round} block ${b} torn`).toBe(true);
            }
            if (found !== durable[b] && !later.get(b)?.has(found)) {
              throw new Error(`round ${round} block ${b}: found ${found}, durable ${durable[b]}, later ${[...(later.get(b) ?? [])]}`);
            }
            durable[b] = found;
          }
        } finally {
          await store.close();
        }
        if (round % 25 === 24) {
          const chk = await checkStore(dir, { repair: false });
          expect(chk.problems).toEqual([]);
        }
      }
      expect(flushesAcked).toBeGreaterThan(ROUNDS / 2);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }, 180_000);
});
