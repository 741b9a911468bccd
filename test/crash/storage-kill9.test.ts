// Real crashes: a child process writes and flushes continuously and is killed with SIGKILL at a
// random moment (after a random number of answered flushes and further events); the store must
// reopen, every write answered before the last answered flush and every answered FUA write must
// read back, no block may show data written for another block, and every snapshot answered in any
// round must exist (until its delete was issued) with exactly its content; the offline check must
// be clean after the reopen reclaimed leaks. Rounds use fixed seeds; the last one a fresh seed
// (printed; replay with SNAPNBD_SEED=<seed>).
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { openStore } from '../../src/storage/index.ts';
import { checkStore } from '../../src/storage/check.ts';
import { Prng, testSeed } from '../helpers/prng.ts';
import { BLOCK, BLOCKS, MAGIC, blockContent } from './storage-kill-writer.ts';

const ROUNDS = Number(process.env['KILL_ROUNDS'] ?? 100);
/** The rounds take ~2.6 s each at load 13 (a node start each): 100 of them need room on a loaded CI. */
const TEST_TIMEOUT_MS = 1_200_000;
const children = new Set<ReturnType<typeof spawn>>();
/** Set when the file ends: a test body still running (timed out) must not start another writer. */
let ended = false;
afterAll(() => {
  ended = true;
  for (const c of children) c.kill('SIGKILL');
});

interface Op { block: number; c: number; trim: boolean }
interface Round { acked: number; writes: (Op & { fua: boolean })[]; issued: Op[]; snaps: Set<string>; deleteIssued: Set<string>; deleted: Set<string>; flushes: number }

/** Longest a round may take to reach its kill event (a child that hangs fails the test). */
const ROUND_LIMIT_MS = 60_000;

/** Runs the writer; kills it on the `extra`th event after its `flushes`th answered flush. */
function runChild(dir: string, counter: number, seed: number, flushes: number, extra: number): Promise<Round> {
  return new Promise((resolve, reject) => {
    if (ended) {
      reject(new Error('the test file has ended (timed out?): no new writer'));
      return;
    }
    const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'storage-kill-writer.ts'), dir, String(counter), String(seed)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.add(child);
    const r: Round = { acked: -1, writes: [], issued: [], snaps: new Set(), deleteIssued: new Set(), deleted: new Set(), flushes: 0 };
    let after = 0;
    let killed = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`writer did not reach ${flushes} flushes + ${extra} events in ${ROUND_LIMIT_MS} ms`));
    }, ROUND_LIMIT_MS);
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const [k, a, b] = line.split(' ');
      if (k === 'I' || k === 'Z') r.issued.push({ block: Number(a), c: Number(b), trim: k === 'Z' });
      else if (k === 'W' || k === 'T' || k === 'U') r.writes.push({ block: Number(a), c: Number(b), trim: k === 'T', fua: k === 'U' });
      else if (k === 'F') {
        r.acked = Number(a);
        r.flushes++;
      } else if (k === 'S') r.snaps.add(a!);
      else if (k === 'X') r.deleteIssued.add(a!); // an unanswered delete may have committed
      else if (k === 'D') r.deleted.add(a!);
      if (!killed && r.flushes >= flushes && after++ >= extra) {
        killed = true;
        child.kill('SIGKILL');
      }
    });
    child.on('error', reject);
    child.on('exit', () => {
      clearTimeout(timer);
      children.delete(child);
      rl.close();
      resolve(r);
    });
  });
}

/** Reads `dev`'s blocks as counters (0: zeros), checking each is whole and in its place. */
async function readCounters(read: (buf: Buffer) => Promise<unknown>, what: string): Promise<Int32Array> {
  const buf = Buffer.alloc(BLOCK * BLOCKS);
  await read(buf);
  const out = new Int32Array(BLOCKS);
  for (let b = 0; b < BLOCKS; b++) {
    const blk = buf.subarray(b * BLOCK, (b + 1) * BLOCK);
    if (blk.every((x) => x === 0)) continue;
    expect(blk.readUInt32LE(0), `${what} block ${b} magic`).toBe(MAGIC);
    expect(blk.readUInt32LE(4), `${what} block ${b} holds another block's data`).toBe(b);
    out[b] = blk.readUInt32LE(8);
    expect(blk.equals(blockContent(b, out[b]!)), `${what} block ${b} torn`).toBe(true);
  }
  return out;
}

describe('kill -9 during continuous writes and flushes', () => {
  it(`${ROUNDS} rounds`, async () => {
    const root = await mkdtemp(join(tmpdir(), 'snapnbd-kill-'));
    const dir = join(root, 'store');
    const fresh = testSeed();
    console.log(`kill -9: seeds 12345.. and fresh seed ${fresh} in the last round (replay: SNAPNBD_SEED=${fresh})`);
    try {
      // durable[block] = the counter the block held at the last reopen (0 = never written or trimmed).
      let durable: Int32Array = new Int32Array(BLOCKS);
      // Every snapshot answered in any round, with the counter of each of its blocks.
      const known = new Map<string, Int32Array>();
      const deleteIssued = new Set<string>();
      let counter = 0;
      let flushesAcked = 0;
      let fuaChecked = 0;
      let snapsChecked = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const seed = round === ROUNDS - 1 ? fresh : 12345 + round;
        const rnd = new Prng(seed);
        const r = await runChild(dir, counter, seed, 1 + rnd.int(0, 1), rnd.int(0, 40));
        for (const w of r.issued) counter = Math.max(counter, w.c);
        // What each block must hold: the newest write answered before the last answered flush,
        // or answered with FUA; anything issued after that may have landed instead.
        const expected = Int32Array.from(durable);
        const floor = new Array<number>(BLOCKS).fill(r.acked);
        for (const w of [...r.writes].sort((a, b) => a.c - b.c)) {
          if (w.c > r.acked && !w.fua) continue;
          expected[w.block] = w.trim ? 0 : w.c;
          floor[w.block] = Math.max(floor[w.block]!, w.c);
          if (w.fua && w.c > r.acked) fuaChecked++;
        }
        const later = new Map<number, Set<number>>();
        for (const w of r.issued) if (w.c > floor[w.block]!) {
          let s = later.get(w.block);
          if (!s) later.set(w.block, (s = new Set()));
          s.add(w.trim ? 0 : w.c);
        }
        // An answered snapshot holds every write up to the counter in its name (all answered).
        for (const name of r.snaps) {
          const upTo = Number(name.slice(1));
          const content = Int32Array.from(durable);
          for (const w of [...r.issued].sort((a, b) => a.c - b.c)) if (w.c <= upTo) content[w.block] = w.trim ? 0 : w.c;
          known.set(name, content);
        }
        for (const n of r.deleteIssued) deleteIssued.add(n);
        if (r.acked >= 0) flushesAcked++;
        const store = await openStore(dir, { commitIntervalMs: 0 });
        try {
          const snaps = new Set(store.listSnapshots('v').map((s) => s.name));
          // An answered delete is durable.
          for (const s of r.deleted) expect(snaps.has(s), `answered delete of ${s} survives`).toBe(false);
          for (const [name, content] of known) {
            if (!snaps.has(name)) {
              expect(deleteIssued.has(name), `round ${round}: answered snapshot ${name} survives`).toBe(true);
              known.delete(name);
              continue;
            }
            snapsChecked++;
            const got = await readCounters((buf) => store.snapshotView('v', name).read(0, buf.length, buf), `round ${round} snapshot ${name}`);
            for (let b = 0; b < BLOCKS; b++) {
              if (got[b] !== content[b]) throw new Error(`round ${round} snapshot ${name} block ${b}: holds ${got[b]}, was ${content[b]} when answered`);
            }
          }
          const found = await readCounters((buf) => store.head('v').read(0, buf.length, buf), `round ${round}`);
          for (let b = 0; b < BLOCKS; b++) {
            if (found[b] !== expected[b] && !later.get(b)?.has(found[b]!)) {
              throw new Error(`round ${round} block ${b}: found ${found[b]}, durable ${expected[b]}, later ${[...(later.get(b) ?? [])]}`);
            }
          }
          durable = found;
        } finally {
          await store.close();
        }
        if (round % 25 === 24) {
          const chk = await checkStore(dir, { repair: false });
          expect(chk.problems).toEqual([]);
        }
      }
      // Every round was killed after at least one answered flush; FUA writes and snapshots were answered.
      expect(flushesAcked).toBe(ROUNDS);
      expect(fuaChecked, 'FUA writes answered after the last flush and checked').toBeGreaterThan(0);
      expect(snapsChecked, 'answered snapshots checked by content').toBeGreaterThan(0);
      console.log(`kill -9: ${ROUNDS} rounds, ${fuaChecked} FUA writes past their round's last flush, ${snapsChecked} snapshot checks by content`);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  }, TEST_TIMEOUT_MS);
});
