// Chains of partial slots (src/storage/partial-slots.ts): a block-aligned write to a partial slot
// a snapshot shares makes a partial slot over it and reads nothing; every snapshot along the chain
// reads its own bytes; the chain survives a power loss, a reopen from the log and from a
// checkpoint, and `check`; past CHAIN_DEPTH_MAX the write merges the chunk whole (a read);
// deleting the snapshots shortens the chains in the next compaction pass with the space counters
// equal to a walk of the maps; a looping chain on disk refuses the store at open.
import { describe, expect, it } from 'vitest';
import { checkStore } from '../../src/storage/check.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { CHAIN_DEPTH_MAX } from '../../src/storage/partial-slots.ts';
import { encodeSlotValid } from '../../src/storage/records.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { countersMatch, openStore, partialCount, pattern, readsOf, readVolume } from '../helpers/partial-store.ts';

const KiB = 1024;
const CHUNK = 64 * KiB;
const SIZE = 512 * KiB;

const open = openStore;
const segReads = (io: HoldFileIo): number => readsOf(io);
const readAll = (s: CowStore, snap?: string): Promise<Buffer> => readVolume(s, SIZE, snap);

function depthOf(s: CowStore, c: number): number {
  const v = s.inspect().volume('v')!;
  return s.inspect().chunkClass(CHUNK).partials.depth(v.head.map.slot(c));
}

/**
 * Volume 'v' filled whole, then `levels` rounds of (snapshot s<i>, one 4 KiB block of chunk 2 at a
 * new offset, one of chunk 5 at offset 0): chunk 2's chain grows a link a round. Returns each
 * snapshot's expected image and the head's.
 */
async function chained(s: CowStore, levels: number): Promise<{ snaps: Buffer[]; model: Buffer }> {
  await s.createVolume({ name: 'v', size: SIZE, chunkSize: CHUNK });
  const model = pattern(SIZE, 1);
  await s.head('v').write(0, model, { fua: true });
  const snaps: Buffer[] = [];
  for (let i = 0; i < levels; i++) {
    await s.createSnapshot('v', `s${i}`);
    snaps.push(Buffer.from(model));
    for (const off of [2 * CHUNK + ((i * 3) % 16) * 4 * KiB, 5 * CHUNK]) {
      const b = pattern(4 * KiB, 100 + i * 2 + off);
      await s.head('v').write(off, b, { fua: false });
      b.copy(model, off);
    }
  }
  return { snaps, model };
}

async function allRight(s: CowStore, snaps: Buffer[], model: Buffer, names = snaps.map((_b, i) => `s${i}`)): Promise<void> {
  expect((await readAll(s)).equals(model), 'the head').toBe(true);
  for (let i = 0; i < snaps.length; i++) {
    if (names[i] === null) continue;
    expect((await readAll(s, names[i])).equals(snaps[i]!), `snapshot ${names[i]}`).toBe(true);
  }
}

describe('chains of partial slots', () => {
  it('a write to a shared partial slot reads nothing; each snapshot of the chain reads its own bytes; a reopen and a checkpoint keep them', async () => {
    const sim = new SimFileIo();
    const io = new HoldFileIo(sim);
    const s = await open(io);
    const r0 = segReads(io);
    const { snaps, model } = await chained(s, 6);
    expect(segReads(io), 'segment reads while the chains grew').toBe(r0);
    expect(depthOf(s, 2)).toBe(6);
    expect(depthOf(s, 5)).toBe(6);
    await allRight(s, snaps, model);
    // Every block of the top link written: it is whole and lets its chain go from the head.
    for (let off = 0; off < CHUNK; off += 4 * KiB) {
      const b = pattern(4 * KiB, 300 + off);
      await s.head('v').write(5 * CHUNK + off, b, { fua: false });
      b.copy(model, 5 * CHUNK + off);
    }
    expect(depthOf(s, 5)).toBe(0);
    await allRight(s, snaps, model);
    countersMatch(s);
    await s.flush();
    sim.crash(Math.random, 'lose');
    const s2 = await open(new HoldFileIo(sim), 1); // replays the log; its next commit writes a checkpoint
    expect(depthOf(s2, 2)).toBe(6);
    await allRight(s2, snaps, model);
    await s2.createSnapshot('v', 'cp');
    await s2.close();
    sim.crash(Math.random, 'lose');
    const s3 = await open(sim);
    expect(depthOf(s3, 2)).toBe(6);
    await allRight(s3, snaps, model);
    expect((await readAll(s3, 'cp')).equals(model)).toBe(true);
    countersMatch(s3);
    await s3.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });

  it(`past ${CHAIN_DEPTH_MAX} links the write merges the chunk whole (a read through the chain)`, async () => {
    const sim = new SimFileIo();
    const io = new HoldFileIo(sim);
    const s = await open(io);
    const { snaps, model } = await chained(s, CHAIN_DEPTH_MAX);
    expect(depthOf(s, 2)).toBe(CHAIN_DEPTH_MAX);
    await s.createSnapshot('v', 'last');
    const r0 = segReads(io);
    const b = pattern(4 * KiB, 999);
    await s.head('v').write(2 * CHUNK + 60 * KiB, b, { fua: false });
    b.copy(model, 2 * CHUNK + 60 * KiB);
    expect(segReads(io), 'the merge read').toBeGreaterThan(r0);
    expect(depthOf(s, 2), 'merged whole').toBe(0);
    await allRight(s, snaps, model);
    countersMatch(s);
    await s.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });

  it('deleting the snapshots shortens the chains in the next compaction pass; counters equal a walk; check is clean', async () => {
    const sim = new SimFileIo();
    const io = new HoldFileIo(sim);
    const s = await open(io);
    const { snaps, model } = await chained(s, 5);
    const live = (): number => s.inspect().chunkClass(CHUNK).liveSlots();
    const liveBefore = live();
    // Middle snapshots go: their links are held by the link above only.
    for (const i of [1, 2, 3]) await s.deleteSnapshot('v', `s${i}`);
    countersMatch(s);
    const names = snaps.map((_b, i) => ([1, 2, 3].includes(i) ? null : `s${i}`)) as string[];
    await allRight(s, snaps, model, names);
    await s.compact();
    await s.compact();
    await s.flush();
    expect(depthOf(s, 2), 'the links only deleted snapshots held are folded into the top').toBe(2);
    expect(live(), 'their slots freed').toBe(liveBefore - 2 * 3);
    await allRight(s, snaps, model, names);
    countersMatch(s);
    // The last ones: the chains end over the whole slots of the first fill, then merge whole.
    await s.deleteSnapshot('v', 's0');
    await s.deleteSnapshot('v', 's4');
    await s.compact();
    await s.compact();
    await s.flush();
    expect(partialCount(s)).toBe(0);
    expect((await readAll(s)).equals(model)).toBe(true);
    countersMatch(s);
    await s.close();
    sim.crash(Math.random, 'lose');
    const s2 = await open(sim);
    expect((await readAll(s2)).equals(model)).toBe(true);
    await s2.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });

  // The merge pins the slot it shortens; a client write that lets go of it meanwhile leaves it
  // held by the pin alone, and replay frees it at that write's record: no record may name it
  // after (neither the merge's nor a checkpoint's), or replay brings it back partial, its base
  // one reference too high.
  it.each([['', false], [' and a checkpoint written meanwhile', true]])(
    'a client write that lets go of a slot the compactor is shortening leaves no partial slot behind a power loss%s', async (_d, checkpoint) => {
      const sim = new SimFileIo();
      const io = new HoldFileIo(sim);
      const s = await open(io);
      const { model } = await chained(s, 2);
      await s.deleteSnapshot('v', 's1'); // the first links of chunks 2 and 5 are held by the second alone
      const held = io.hold('.dat', 'read'); // the copy from chunk 2's first link
      const pass = s.compact();
      await held.reached;
      const whole = pattern(CHUNK, 7);
      await s.head('v').write(2 * CHUNK, whole, { fua: false }); // the pinned slot is not exclusive: redirects
      whole.copy(model, 2 * CHUNK);
      if (checkpoint) await s.checkpoint(); // while the slot is held by the pin alone
      held.release();
      await pass;
      expect(depthOf(s, 2)).toBe(0);
      expect(depthOf(s, 5), 'one link shorter').toBe(1);
      // With the checkpoint: no commit after it, so the power loss leaves it the last durable
      // state, chunk 5 still two links deep.
      if (!checkpoint) await s.flush();
      sim.crash(Math.random, 'lose');
      const s2 = await open(new HoldFileIo(sim));
      expect(partialCount(s2), "chunk 5's links alone").toBe(checkpoint ? 2 : 1);
      expect((await readAll(s2)).equals(model)).toBe(true);
      countersMatch(s2);
      await s2.close();
      expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
    });

  it('a looping chain on disk refuses the store at open with a clear error', async () => {
    const sim = new SimFileIo();
    const s = await open(sim);
    await chained(s, 2);
    // A well-formed record that closes a loop: the chain's bottom link over its top.
    const cls = s.inspect().chunkClass(CHUNK);
    const top = s.inspect().volume('v')!.head.map.slot(2);
    const bottom = cls.partials.get(top)!.base;
    const journal = (s as unknown as { journal: { log(r: Buffer): void } }).journal;
    journal.log(encodeSlotValid(CHUNK, bottom, top, cls.partials.get(bottom)!.bits));
    await s.flush();
    await s.close();
    await expect(open(sim)).rejects.toThrow(/partial slot \d+ \(chunk size 65536\) lies in a chain deeper than 16 or in a loop/);
    const r = await checkStore('/s', { repair: false, fileIo: sim });
    expect(r.problems.join('\n')).toMatch(/in a loop/);
  });
});
