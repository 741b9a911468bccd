// Writes right after a snapshot delete freed space on a full disk (segment-reclaim.ts): while the
// segments that lost slots are cut in the background, a write takes the freed holes below the
// cut, and a write that must grow a file waits for the cut to give the space back; neither meets
// ENOSPC. The cut is held at its first I/O, so the moment is exact, not a race.
import { describe, expect, it } from 'vitest';
import { checkStore } from '../../src/storage/check.ts';
import { StorageError, type BlockDevice } from '../../src/storage/device.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';

const CHUNK = 4096;
const SEG_SLOTS = 16;
/** The first segment file of the 4 KiB chunk class. */
const SEG0 = 'seg-12-000000.dat';
const VOLUME = 32 * 1024 * 1024;
/** A small journal: the metadata reserve (which covers its growth) is about 4.5 MiB. */
const JOURNAL_BYTES = 256 * 1024;
/** The file system's size: the reserve and about 1.5 MiB of data. */
const CAPACITY = 6 * 1024 * 1024;

function block(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 17) & 0xff;
  return b;
}

async function writeOk(dev: BlockDevice, off: number, len: number, seed: number): Promise<boolean> {
  try {
    await dev.write(off, block(len, seed), { fua: false });
    return true;
  } catch (e) {
    if (e instanceof StorageError && e.errno === 'ENOSPC') return false;
    throw e;
  }
}

/**
 * Segment 0 holds chunks 0..15 of volume 'v', then snapshot 'keep' holds its slots `snapSlots`
 * alone (`tail`: slots 8..15 after the head trimmed chunks 8..15; else slots 0..7 after the head
 * rewrote chunks 0..7 into slots 8..15); then the disk is filled to the last 4 KiB the reserve
 * allows. Returns the next free chunk of the volume.
 */
async function fullStore(tail: boolean): Promise<{ sim: SimFileIo; hold: HoldFileIo; store: CowStore; dev: BlockDevice; next: number }> {
  const sim = new SimFileIo();
  sim.capacity = CAPACITY; // from the start: the store's free-space estimate begins with a statfs
  const hold = new HoldFileIo(sim);
  const store = await openCowStore('/s', { fileIo: hold, commitIntervalMs: 0, segmentBytes: SEG_SLOTS * CHUNK, journalCompactBytes: JOURNAL_BYTES });
  store.autoCompact = false;
  await store.createVolume({ name: 'v', size: VOLUME, chunkSize: CHUNK });
  const dev = store.head('v');
  await dev.write(0, block(8 * CHUNK, 1), { fua: false });
  if (tail) {
    await dev.write(8 * CHUNK, block(8 * CHUNK, 2), { fua: false });
    await store.createSnapshot('v', 'keep');
    await dev.trim(8 * CHUNK, 8 * CHUNK, { fua: false });
  } else {
    await store.createSnapshot('v', 'keep');
    await dev.write(0, block(8 * CHUNK, 3), { fua: false });
  }
  await store.flush();
  let next = 16;
  while (await writeOk(dev, next * CHUNK, SEG_SLOTS * CHUNK, next)) next += SEG_SLOTS;
  // A commit lowers the reserve by what it appended: full means full right after one.
  for (;;) {
    while (await writeOk(dev, next * CHUNK, CHUNK, next)) next++;
    await store.flush();
    await store.settle();
    if (!(await writeOk(dev, next * CHUNK, CHUNK, next))) break;
    next++;
  }
  expect(next, 'chunks written before the disk was full').toBeGreaterThan(32);
  await store.settle();
  return { sim, hold, store, dev, next };
}

/** Turns of the event loop a write on the simulated file system finishes in (it needs a few). */
const SETTLE_TURNS = 50;

/** Whether `p` settles within SETTLE_TURNS turns of the event loop. */
async function settlesSoon(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true), () => (done = true));
  for (let i = 0; i < SETTLE_TURNS && !done; i++) await new Promise((r) => setImmediate(r));
  return done;
}

async function closeAndCheck(sim: SimFileIo, store: CowStore): Promise<void> {
  await store.close();
  expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
}

describe('writes after a snapshot delete on a full disk', () => {
  it('take the freed holes of a segment while it is being cut', async () => {
    const { sim, hold, store, dev, next } = await fullStore(false);
    const cut = hold.hold(SEG0, 'size'); // the cut's first I/O
    await store.deleteSnapshot('v', 'keep');
    await cut.reached;
    // Slots 0..7 of segment 0 are free: eight writes take them, the cut still held.
    for (let i = 0; i < 8; i++) {
      const w = writeOk(dev, (next + i) * CHUNK, CHUNK, 50 + i);
      const done = await settlesSoon(w);
      if (!done) cut.release(); // it waits for the cut: let it go, the test has failed
      expect(done, `write ${i} after the delete finishes while the cut is held`).toBe(true);
      expect(await w, `write ${i} after the delete`).toBe(true);
    }
    cut.release();
    await store.flush();
    for (let i = 0; i < 8; i++) {
      const got = Buffer.alloc(CHUNK);
      await dev.read((next + i) * CHUNK, CHUNK, got);
      expect(got.equals(block(CHUNK, 50 + i)), `chunk ${next + i}`).toBe(true);
    }
    await closeAndCheck(sim, store);
  });

  it('wait for the cut of a freed tail before they grow a file, instead of ENOSPC', async () => {
    const { sim, hold, store, dev, next } = await fullStore(true);
    const cut = hold.hold(SEG0, 'truncate');
    await store.deleteSnapshot('v', 'keep');
    await cut.reached;
    // Segment 0's free slots are past the cut: the write grows another file, which needs the
    // space the cut gives back.
    const w = writeOk(dev, next * CHUNK, CHUNK, 60);
    expect(await settlesSoon(w), 'the write waits for the cut').toBe(false);
    cut.release();
    expect(await w, 'the write after the delete').toBe(true);
    const got = Buffer.alloc(CHUNK);
    await dev.read(next * CHUNK, CHUNK, got);
    expect(got.equals(block(CHUNK, 60))).toBe(true);
    await closeAndCheck(sim, store);
  });
});
