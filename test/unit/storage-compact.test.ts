// The data compactor: free slots scattered through the middle of segment files go back to the
// file system (st_blocks falls) once live chunks are moved down and the emptied files deleted;
// every node (head, snapshot, clone, clone snapshot) reads the same before and after, diffs and
// space accounting are unchanged, writes and reads running alongside stay correct, a read that
// looked up an old slot keeps its file alive, and `snapnbd check` stays clean.
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isSlot } from '../../src/storage/block-map.ts';
import { segmentFile } from '../../src/storage/chunk-store.ts';
import { checkStore } from '../../src/storage/check.ts';
import { COMPACT_SPACE_MARGIN_BYTES, type CowStore } from '../../src/storage/engine.ts';
import { realFileIo, type FileIo } from '../../src/storage/file-io.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import { buildSparseStore, patternBuf, verifyNodes, type NodeModel } from '../property/storage-model.ts';

/** Longest the background compactor may take to reclaim the sparse store (a hang, not a speed). */
const RECLAIM_LIMIT_MS = 120_000;

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const CHUNKS = 256; // 16 MiB volume
const SEGMENT = 16 * CHUNK; // 16 segments of 1 MiB, 1/4 live after the scenario

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-compact-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Bytes every file under `d` occupies (st_blocks * 512). */
function blocksUnder(d: string): number {
  let n = 0;
  for (const name of readdirSync(d)) n += statSync(join(d, name)).blocks * 512;
  return n;
}

function open(d: string, fileIo: FileIo = realFileIo): Promise<CowStore> {
  return openCowStore(d, { commitIntervalMs: 0, segmentBytes: SEGMENT, fileIo });
}

async function checkClean(d: string): Promise<void> {
  const r = await checkStore(d, { repair: false });
  expect(r.problems).toEqual([]);
  expect(r.ok).toBe(true);
}

describe('compactor', () => {
  it('compact(): scattered free slots go back, every node reads the same, check is clean', async () => {
    const d = join(dir, 's');
    const s = await open(d);
    s.autoCompact = false;
    const nodes = await buildSparseStore(s, CHUNK, CHUNKS);
    const diffBefore = await s.diff('v', 'b', null);
    const spaceBefore = [s.volumeInfo('v').space, s.snapshotInfo('v', 'b').space, s.volumeInfo('w').space, s.snapshotInfo('w', 'w1').space];
    const before = blocksUnder(d);
    const st = await s.compact();
    const after = blocksUnder(d);
    // 12 of the 16 quarter-live segments empty (their 64 live chunks fill 4).
    expect(st.segments).toBeGreaterThanOrEqual(12);
    expect(st.chunksMoved).toBeGreaterThanOrEqual(12 * 4);
    // 12 files of 13 slots each go (their free tails were already cut), the 4 kept files grow
    // by their 3 tail slots each, the journal by a little.
    expect(before - after).toBeGreaterThanOrEqual((12 * 13 - 4 * 3) * CHUNK - 64 * 1024);
    await verifyNodes(s, nodes, 'after compact');
    // Births and sharing unchanged: the same diff, the same accounting.
    expect(await s.diff('v', 'b', null)).toEqual(diffBefore);
    expect([s.volumeInfo('v').space, s.snapshotInfo('v', 'b').space, s.volumeInfo('w').space, s.snapshotInfo('w', 'w1').space]).toEqual(spaceBefore);
    // Nothing left to do; a second call is a no-op.
    expect((await s.compact()).segments).toBe(0);
    await s.close();
    await checkClean(d);
    const r = await open(d);
    r.autoCompact = false;
    await verifyNodes(r, nodes, 'after reopen');
    expect(blocksUnder(d)).toBeLessThanOrEqual(after + 64 * 1024);
    await r.close();
  });

  it('copies live chunks with maintenance reads and writes (the pool, never the loop); client I/O stays client I/O', async () => {
    const d = join(dir, 's');
    const io = new HoldFileIo(realFileIo);
    const s = await open(d, io);
    s.autoCompact = false;
    const nodes = await buildSparseStore(s, CHUNK, CHUNKS);
    const before = io.ioOf('.dat');
    const st = await s.compact();
    expect(st.chunksMoved).toBeGreaterThan(0);
    const during = io.ioOf('.dat');
    expect(during.reads - before.reads).toBeGreaterThan(0);
    expect(during.backgroundReads - before.backgroundReads).toBe(during.reads - before.reads);
    expect(during.writes - before.writes).toBeGreaterThan(0);
    expect(during.backgroundWrites - before.backgroundWrites).toBe(during.writes - before.writes);
    await verifyNodes(s, nodes, 'after compact');
    await s.head('v').write(0, Buffer.alloc(CHUNK, 1), { fua: false });
    const after = io.ioOf('.dat');
    expect(after.reads).toBeGreaterThan(during.reads);
    expect(after.writes).toBeGreaterThan(during.writes);
    expect([after.backgroundReads, after.backgroundWrites]).toEqual([during.backgroundReads, during.backgroundWrites]);
    await s.close();
  });

  it('runs on its own after the commit that freed the slots', async () => {
    const d = join(dir, 's');
    const s = await open(d);
    const nodes = await buildSparseStore(s, CHUNK, CHUNKS);
    const start = Date.now();
    const before = blocksUnder(d);
    // The scenario's own commits may already have started it; wait for the whole reclaim.
    const live = s.stats().liveBytes;
    // Waits for the reclaim itself; the limit only bounds a hang (speed is bench/'s business).
    while (blocksUnder(d) > live + 6 * MiB && Date.now() - start < RECLAIM_LIMIT_MS) await new Promise((r) => setTimeout(r, 100));
    const after = blocksUnder(d);
    expect(after, `st_blocks before ${before}, after ${after} (live ${live})`).toBeLessThanOrEqual(live + 6 * MiB);
    await verifyNodes(s, nodes, 'after background compaction');
    await s.close();
    await checkClean(d);
  }, RECLAIM_LIMIT_MS + 60_000);

  it('writes and reads while it runs: writes to chunks being moved redirect, nothing is lost', async () => {
    const d = join(dir, 's');
    const s = await open(d);
    s.autoCompact = false;
    const nodes = await buildSparseStore(s, CHUNK, CHUNKS);
    const head = nodes[0]!;
    const vol = s.inspect().volume('v')!;
    const dev = s.head('v');
    let done = false;
    let redirected = 0;
    let maxWriteMs = 0;
    const writer = (async () => {
      for (let i = 0; !done || i < 8; i++) {
        // A chunk of the segment being emptied when there is one (white box), else any.
        let c = (i * 37) % CHUNKS;
        for (let k = 0; k < CHUNKS && vol.chunkClass.evacuating.size > 0; k++) {
          const x = (i * 13 + k) % CHUNKS;
          const slot = vol.head.map.slot(x);
          if (isSlot(slot) && vol.chunkClass.isEvacuating(slot)) {
            c = x;
            redirected++;
            break;
          }
        }
        // Alternate whole chunks and partial ones (merged with the old slot's content).
        const off = c * CHUNK + (i % 2) * 4096;
        const data = patternBuf(i % 2 ? 8192 : CHUNK, 100 + i);
        data.copy(head.data, off);
        const t0 = performance.now();
        await dev.write(off, data, { fua: false });
        maxWriteMs = Math.max(maxWriteMs, performance.now() - t0);
        await new Promise((r) => setImmediate(r)); // cached writes complete synchronously
      }
    })();
    const reader = (async () => {
      while (!done) {
        await verifyNodes(s, nodes.slice(1), 'during compaction');
        // Cached reads complete synchronously: give the event loop its turn.
        await new Promise((r) => setImmediate(r));
      }
    })();
    const st = await s.compact();
    done = true;
    await Promise.all([writer, reader]);
    expect(st.segments).toBeGreaterThan(0);
    expect(redirected).toBeGreaterThan(0);
    console.log(`compaction with a concurrent writer: ${st.segments} segments, ${st.chunksMoved} chunks moved, ` +
      `writes held at most ${st.maxHoldMs.toFixed(2)} ms, longest write ${maxWriteMs.toFixed(1)} ms`);
    await verifyNodes(s, nodes, 'after compaction with writers');
    await s.flush();
    await s.close();
    await checkClean(d);
    const r = await open(d);
    r.autoCompact = false;
    await verifyNodes(r, nodes, 'after reopen');
    await r.close();
  });

  it('a read that looked up an old slot reads it, and holds its file until it ends', async () => {
    const d = join(dir, 's');
    const gate = new HoldFileIo(realFileIo);
    const s = await open(d, gate);
    s.autoCompact = false;
    const nodes: NodeModel[] = await buildSparseStore(s, CHUNK, CHUNKS);
    // A chunk of snapshot b whose slot lies in segment 15 (one of those to be emptied).
    const cls = s.inspect().volume('v')!.chunkClass;
    const map = s.inspect().volume('v')!.snaps.find((n) => n.name === 'b')!.map;
    let chunk = -1;
    for (let c = 0; c < CHUNKS && chunk < 0; c++) if (isSlot(map.slot(c)) && cls.segmentOf(map.slot(c)) === 15) chunk = c;
    expect(chunk).toBeGreaterThanOrEqual(0);
    const victimPath = join(d, segmentFile(cls.log2, 15));
    const held = gate.hold(victimPath, 'read');
    const got = Buffer.alloc(CHUNK);
    const read = s.snapshotView('v', 'b').read(chunk * CHUNK, CHUNK, got);
    await held.reached;
    const st = await s.compact();
    expect(st.segments).toBeGreaterThanOrEqual(12);
    // Moved and checkpointed, but the old slots stay quarantined while the read runs.
    expect(statSync(victimPath).size).toBeGreaterThan(0);
    held.release();
    await read;
    expect(got.equals(nodes[1]!.data.subarray(chunk * CHUNK, (chunk + 1) * CHUNK))).toBe(true);
    await s.settle();
    expect(() => statSync(victimPath)).toThrow();
    await verifyNodes(s, nodes, 'after the held read');
    await s.close();
    await checkClean(d);
  });
});

describe('compactor short of space', () => {
  it('skips a pass the file system has no room for (copies + checkpoint), runs once there is', async () => {
    const sim = new SimFileIo();
    const s = await open('/s', sim);
    s.autoCompact = false;
    const nodes = await buildSparseStore(s, CHUNK, CHUNKS);
    // Room for the copies of one pass but not for the margin on top: the pass must not start
    // (after its switch, every commit would need room for a checkpoint).
    sim.capacity = sim.usedBytes() + COMPACT_SPACE_MARGIN_BYTES / 2;
    expect((await s.compact()).segments).toBe(0);
    await s.flush(); // commits still work
    await verifyNodes(s, nodes, 'after the skipped pass');
    sim.capacity = Infinity;
    expect((await s.compact()).segments).toBeGreaterThanOrEqual(12);
    await verifyNodes(s, nodes, 'after compaction');
    await s.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });
});
