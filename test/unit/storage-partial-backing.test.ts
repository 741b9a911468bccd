// Partial slots over the backing file (src/storage/partial-slots.ts, BACKING_BASE): the first
// block-aligned write into a chunk unmapped over a volume's backing image writes only its blocks
// into a fresh slot and reads nothing; the other blocks read from the backing file (zeros past
// its end). The state survives a power loss (replay) and a checkpoint, a snapshot then a write,
// in-place writes that complete it, a compaction that moves it, and `check`.
import { describe, expect, it } from 'vitest';
import { checkStore } from '../../src/storage/check.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { durableSimFile } from '../helpers/sim-files.ts';
import { spaceOf } from '../../src/storage/accounting.ts';
import { countersMatch, openStore, partialCount, pattern, readsOf, readVolume } from '../helpers/partial-store.ts';
import { BACKING_BASE } from '../../src/storage/partial-slots.ts';

const KiB = 1024;
const CHUNK = 64 * KiB;
const SIZE = 1024 * KiB;
/** Ends inside the last chunk, mid-block: the blocks past it read zeros. */
const BACKING_LEN = SIZE - CHUNK / 2 - 1000;

const open = openStore;

function backed(s: CowStore): [number, { base: number; at: number }][] {
  const out: [number, { base: number; at: number }][] = [];
  for (const cls of s.inspect().classes) for (const [slot, p] of cls.partials.entries()) if (p.base === BACKING_BASE) out.push([slot, p]);
  return out;
}

const all = partialCount;
const reads = readsOf;
const readAll = (s: CowStore, snap?: string): Promise<Buffer> => readVolume(s, SIZE, snap);

/** Volume 'v' (64 KiB chunks) over a backing image of pattern 1; the model of its head. */
async function overBacking(): Promise<{ sim: SimFileIo; io: HoldFileIo; s: CowStore; model: Buffer }> {
  const sim = new SimFileIo();
  const img = pattern(BACKING_LEN, 1);
  await durableSimFile(sim, '/b.img', img);
  const io = new HoldFileIo(sim);
  const s = await open(io);
  await s.createVolume({ name: 'v', size: SIZE, chunkSize: CHUNK, backing: '/b.img' });
  const model = Buffer.alloc(SIZE);
  img.copy(model);
  return { sim, io, s, model };
}

describe('partial slots over the backing file', () => {
  it('a first 4 KiB write reads nothing, writes one block, and reads back right (zeros past the backing end)', async () => {
    const { io, s, model } = await overBacking();
    const dev = s.head('v');
    const put = async (off: number, len: number, seed: number): Promise<void> => {
      const b = pattern(len, seed);
      await dev.write(off, b, { fua: false });
      b.copy(model, off);
    };
    const r0 = reads(io, '.img') + reads(io, '.dat');
    await put(CHUNK + 8 * KiB, 4 * KiB, 2);
    await put(15 * CHUNK + 4 * KiB, 8 * KiB, 3); // the last chunk: the backing ends inside it
    expect(reads(io, '.img') + reads(io, '.dat'), 'reads by the first writes').toBe(r0);
    expect(backed(s).map(([, p]) => p.at).sort((a, b) => a - b)).toEqual([1, 15]);
    expect(spaceOf(s.inspect().volume('v')!.head).used).toBe(2 * CHUNK);
    countersMatch(s);
    expect((await readAll(s)).equals(model)).toBe(true);
    // Reads across the block boundaries (backing | slot | backing), unaligned.
    for (const [off, len] of [[CHUNK + 8 * KiB - 100, 300], [CHUNK + 12 * KiB - 7, 20], [CHUNK - 3, 8 * KiB + 10], [15 * CHUNK + 11 * KiB, 5 * KiB]] as const) {
      const b = Buffer.alloc(len);
      await dev.read(off, len, b);
      expect(b.equals(model.subarray(off, off + len)), `read [${off}, +${len})`).toBe(true);
    }
    // In place: every other block, then the rest; the last makes it whole (no backing base left).
    for (let off = 0; off < CHUNK; off += 8 * KiB) if (off !== 8 * KiB) await put(CHUNK + off, 4 * KiB, 10 + off);
    expect(backed(s).length).toBe(2);
    expect((await readAll(s)).equals(model)).toBe(true);
    for (let off = 4 * KiB; off < CHUNK; off += 8 * KiB) await put(CHUNK + off, 4 * KiB, 20 + off);
    expect(backed(s).map(([, p]) => p.at)).toEqual([15]);
    // Unaligned in place: merged whole through the read path (backing bytes and zeros included).
    await put(15 * CHUNK + 100, 50, 30);
    expect(backed(s).length).toBe(0);
    expect((await readAll(s)).equals(model)).toBe(true);
    countersMatch(s);
    await s.close();
    expect((await checkStore('/s', { repair: false, fileIo: io })).problems).toEqual([]);
  });

  it('survives a power loss (replay) and a checkpoint; a snapshot then a write; check understands it', async () => {
    const { sim, s, model } = await overBacking();
    const dev = s.head('v');
    for (let c = 0; c < SIZE / CHUNK; c++) {
      const b = pattern(4 * KiB, 40 + c);
      await dev.write(c * CHUNK + (c % 16) * 4 * KiB, b, { fua: false });
      b.copy(model, c * CHUNK + (c % 16) * 4 * KiB);
    }
    expect(backed(s).length).toBe(SIZE / CHUNK);
    await s.flush();
    sim.crash(Math.random, 'lose');
    const s2 = await open(new HoldFileIo(sim));
    expect(backed(s2).length).toBe(SIZE / CHUNK);
    expect((await readAll(s2)).equals(model)).toBe(true);
    await s2.createSnapshot('v', 'a');
    const snap = Buffer.from(model);
    // Its slot is shared now: the write redirects to a partial slot over it (a chain down to the
    // backing file), reading nothing.
    const b = pattern(4 * KiB, 50);
    await s2.head('v').write(3 * CHUNK + 8 * KiB, b, { fua: true });
    b.copy(model, 3 * CHUNK + 8 * KiB);
    expect(backed(s2).length).toBe(SIZE / CHUNK);
    expect(all(s2), 'the chain').toBe(SIZE / CHUNK + 1);
    expect((await readAll(s2)).equals(model)).toBe(true);
    expect((await readAll(s2, 'a')).equals(snap)).toBe(true);
    countersMatch(s2);
    await s2.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
    // A checkpoint carries them (a tiny journal limit: the next commit writes one).
    const s3 = await open(sim, 1);
    await s3.createSnapshot('v', 'c');
    await s3.close();
    sim.crash(Math.random, 'lose');
    const s4 = await open(sim);
    expect(backed(s4).length).toBe(SIZE / CHUNK);
    expect((await readAll(s4)).equals(model)).toBe(true);
    expect((await readAll(s4, 'a')).equals(snap)).toBe(true);
    // Nothing to merge over the backing file: a compaction pass leaves them partial; the chain's
    // top takes its orphaned base's blocks and lies over the backing file itself.
    expect(all(s4)).toBe(SIZE / CHUNK + 1);
    await s4.deleteSnapshot('v', 'a');
    await s4.deleteSnapshot('v', 'c');
    await s4.compact();
    expect(backed(s4).length).toBe(SIZE / CHUNK);
    expect(all(s4), 'no chain left').toBe(SIZE / CHUNK);
    expect((await readAll(s4)).equals(model)).toBe(true);
    await s4.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });

  it('a compaction moves a partial slot over the backing file and it still reads right after a reopen', async () => {
    const { sim, s, model } = await overBacking();
    const dev = s.head('v');
    // Another volume of the class fills the first segment and half the second; the partial slot
    // lands after them, with holes below it once that volume is gone.
    await s.createVolume({ name: 'w', size: 2 * SIZE, chunkSize: CHUNK });
    await s.head('w').write(0, pattern(SIZE + SIZE / 2, 60), { fua: false });
    const b = pattern(4 * KiB, 70);
    await dev.write(15 * CHUNK + 4 * KiB, b, { fua: false });
    b.copy(model, 15 * CHUNK + 4 * KiB);
    await s.deleteVolume('w'); // the first segment is empty now: a compaction moves the slot down
    await s.flush();
    const [[before]] = backed(s) as [[number, unknown]];
    await s.compact();
    const after = backed(s);
    expect(after.length).toBe(1);
    expect(after[0]![0], 'the partial slot moved').not.toBe(before);
    expect(after[0]![1].at).toBe(15);
    expect((await readAll(s)).equals(model)).toBe(true);
    countersMatch(s);
    await s.close();
    sim.crash(Math.random, 'lose');
    const s2 = await open(sim);
    expect(backed(s2)[0]![0]).toBe(after[0]![0]);
    expect((await readAll(s2)).equals(model)).toBe(true);
    await s2.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });
});
