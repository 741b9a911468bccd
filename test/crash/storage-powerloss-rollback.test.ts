// Power loss during a rollback onto a snapshot from before a grow, whose end falls inside a chunk:
// the part of that chunk past the snapshot's end must read zeros once the rollback is durable,
// never the backing file's bytes (nor old data a shrink left in the slot). A commit is started
// at the rollback's first segment write (the periodic commit landing at the worst moment), and
// the power is cut at every hit of every crash point, under random, lose and keep. After each
// cut the head reads the content from before the rollback or exactly the snapshot's, zeros past
// its end; the snapshot is untouched and the store checks clean.
// Replay: SEED=<n> npx vitest run test/crash/storage-powerloss-rollback.test.ts
import { describe, expect, it } from 'vitest';
import { checkStore } from '../../src/storage/check.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { CrashPoint, type FileIo } from '../../src/storage/file-io.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { prng, SimCrash, SimFileIo } from '../../src/storage/sim-file-io.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { durableSimFile } from '../helpers/sim-files.ts';

const KiB = 1024;
const CHUNK = 4096;
const BACKING = 100 * KiB;
/** The snapshot's size: inside chunk 10, over the backing file. */
const SNAP_SIZE = 40 * KiB + 512;
const GROWN = 300 * KiB;
const BASE_SEED = Number(process.env['SEED'] ?? 100);
const POINTS = [
  CrashPoint.DataWritten, CrashPoint.BeforeDataSync, CrashPoint.AfterDataSync, CrashPoint.JournalAppendMid,
  CrashPoint.BeforeJournalSync, CrashPoint.AfterJournalSync, CrashPoint.CheckpointWritten,
  CrashPoint.SuperblockWritten, CrashPoint.AfterSuperblockSync, CrashPoint.SegmentDeleted,
  CrashPoint.FsCreate, CrashPoint.FsUnlink, CrashPoint.FsTruncate, CrashPoint.FsExtend, CrashPoint.FsSyncDir,
] as const;

function open(io: FileIo): Promise<CowStore> {
  return openCowStore('/store', { fileIo: io, commitIntervalMs: 0, segmentBytes: 16 * CHUNK }).then((s) => {
    s.autoCompact = false;
    return s;
  });
}

async function readAll(read: (off: number, len: number, into: Buffer) => Promise<void>, size: number): Promise<Buffer> {
  const b = Buffer.alloc(size);
  await read(0, size, b);
  return b;
}

interface Setup {
  sim: SimFileIo;
  hold: HoldFileIo;
  store: CowStore;
  /** The head before the rollback, and after it (the snapshot, zeros past its end). */
  before: Buffer;
  after: Buffer;
  snap: Buffer;
}

/**
 * Volume 'b' over a backing file, snapshot 's' of SNAP_SIZE bytes, then grown to GROWN and
 * written across the snapshot's end and in the grown part; all durable. `slotTail`: the
 * snapshot's last chunk is a slot holding old data past its end (written at a larger size, then
 * shrunk), instead of unmapped over the backing file.
 */
async function setup(slotTail: boolean): Promise<Setup> {
  const sim = new SimFileIo();
  const backing = Buffer.alloc(BACKING);
  for (let i = 0; i < BACKING; i++) backing[i] = (i * 7 + 3) & 0xff;
  await durableSimFile(sim, '/b.img', backing);
  const hold = new HoldFileIo(sim);
  const store = await open(hold);
  await store.createVolume({ name: 'b', backing: '/b.img', size: slotTail ? 60 * KiB : SNAP_SIZE, chunkSize: CHUNK });
  const head = store.head('b');
  await head.write(0, Buffer.alloc(3000, 5), { fua: false });
  if (slotTail) {
    await head.write(36 * KiB, Buffer.alloc(8 * KiB, 6), { fua: false }); // chunk 10 whole: 6s
    await store.resizeVolume('b', SNAP_SIZE, { shrink: true });
  }
  await store.createSnapshot('b', 's');
  const snap = await readAll((o, l, b) => store.snapshotView('b', 's').read(o, l, b), SNAP_SIZE);
  await store.resizeVolume('b', GROWN);
  const grown = store.head('b');
  await grown.write(SNAP_SIZE - 2048, Buffer.alloc(4096, 7), { fua: false });
  await grown.write(200 * KiB, Buffer.alloc(4096, 8), { fua: false });
  await store.checkpoint();
  const before = await readAll((o, l, b) => grown.read(o, l, b), GROWN);
  const after = Buffer.alloc(GROWN);
  snap.copy(after);
  return { sim, hold, store, before, after, snap };
}

/**
 * The rollback, with a commit started when its first segment write begins (the write waits
 * until that commit has taken its batch). Resolves whether a segment write was seen.
 */
async function rollbackWithCommit(s: Setup): Promise<boolean> {
  const h = s.hold.hold('.dat', 'write');
  let committed: Promise<void> | null = null;
  void h.reached.then(() => {
    committed = s.store.flush().catch(() => undefined); // a crash may strike inside it
    h.release();
  });
  try {
    await s.store.rollback('b', 's');
  } finally {
    if (committed) await committed;
  }
  return committed !== null;
}

describe('power loss during a rollback to a snapshot from before a grow', () => {
  for (const [what, slotTail] of [['unmapped over the backing file', false], ['a slot a shrink left old data in', true]] as const) {
    it(`at every hit of every point, its last chunk ${what}`, async () => {
      const dry = await setup(slotTail);
      expect(dry.before.equals(dry.after), 'the rollback changes the content').toBe(false);
      dry.sim.hits.clear();
      expect(await rollbackWithCommit(dry), 'the rollback writes the zeroed chunk').toBe(true);
      expect((await readAll((o, l, b) => dry.store.head('b').read(o, l, b), GROWN)).equals(dry.after), 'rolled back').toBe(true);
      const hits = new Map(dry.sim.hits);
      await dry.store.close();
      let cases = 0;
      const seen = { before: 0, after: 0 };
      for (const point of POINTS) {
        const n = hits.get(point) ?? 0;
        for (let k = 1; k <= n; k++) {
          for (const mode of ['random', 'lose', 'keep'] as const) {
            const when = `crash at hit ${k}/${n} of ${point} (${mode})`;
            const s = await setup(slotTail);
            s.sim.armCrash(point, k);
            try {
              await rollbackWithCommit(s);
            } catch (e) {
              if (!(e instanceof SimCrash) && !s.sim.dead) throw e;
            }
            expect(s.sim.lastCrash, when).toBe(point);
            s.store.abandon();
            s.sim.crash(prng(BASE_SEED + cases), mode);
            cases++;
            const r = await open(s.sim);
            expect(r.volumeInfo('b').size, when).toBe(GROWN);
            const got = await readAll((o, l, b) => r.head('b').read(o, l, b), GROWN);
            if (got.equals(s.after)) seen.after++;
            else if (got.equals(s.before)) seen.before++;
            else {
              const i = got.findIndex((x, j) => x !== s.after[j]);
              expect.fail(`${when}: the head is neither as before the rollback nor the snapshot's content; ` +
                `first difference from the snapshot's at byte ${i} (${got[i]} instead of ${s.after[i]}; snapshot ends at ${SNAP_SIZE})`);
            }
            const sg = await readAll((o, l, b) => r.snapshotView('b', 's').read(o, l, b), SNAP_SIZE);
            expect(sg.equals(s.snap), `${when}: snapshot`).toBe(true);
            await r.close();
            expect((await checkStore('/store', { repair: false, fileIo: s.sim })).problems, when).toEqual([]);
          }
        }
      }
      expect(seen.before, 'cuts before the rollback was durable').toBeGreaterThan(0);
      expect(seen.after, 'cuts after the rollback was durable').toBeGreaterThan(0);
      console.log(`rollback (${what}): ${cases} power cuts over ${[...hits].map(([p, c]) => `${p}×${c}`).join(', ')}; ` +
        `${seen.before} as before, ${seen.after} rolled back`);
    });
  }
});
