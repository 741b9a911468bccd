// Patch pages (map-page.ts) through the engine: a write after a snapshot makes the head's page a
// patch, a checkpoint stores pages whole, and open makes them patches again (recovery.ts
// repatch); data and the store's checks stay right across the restart.
import { describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import { checkStore } from '../../src/storage/check.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import type { BlockDevice } from '../../src/storage/device.ts';

const CHUNK = 65536;

function chunkOf(seed: number): Buffer {
  return Buffer.alloc(CHUNK, seed);
}

async function readChunk(dev: BlockDevice, c: number): Promise<number> {
  const b = Buffer.alloc(CHUNK);
  await dev.read(c * CHUNK, CHUNK, b);
  expect(b.every((x) => x === b[0])).toBe(true);
  return b[0]!;
}

/** Whether each node's page 0 is a patch page: s1, s2, head. */
function patched(s: CowStore): boolean[] {
  const v = s.inspect().volume('v')!;
  const nodes = s.inspect().nodes.filter((n) => n.vol === v);
  const snap = (name: string): boolean => nodes.find((n) => n.name === name)!.map.l1.pages[0]!.patched;
  return [snap('s1'), snap('s2'), nodes.find((n) => n.kind === 'head')!.map.l1.pages[0]!.patched];
}

describe('patch pages', () => {
  it('survive a checkpoint and a restart, reading the same data', async () => {
    const sim = new SimFileIo();
    let s = await openCowStore('/s', { fileIo: sim, commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 1024 * CHUNK, chunkSize: CHUNK });
    let dev = s.head('v');
    for (let c = 0; c < 40; c++) await dev.write(c * CHUNK, chunkOf(1), { fua: false });
    await s.createSnapshot('v', 's1');
    await dev.write(5 * CHUNK, chunkOf(2), { fua: false });
    await s.createSnapshot('v', 's2');
    await dev.write(7 * CHUNK, chunkOf(3), { fua: false });
    expect(patched(s)).toEqual([false, true, true]);
    await s.checkpoint();
    await s.close();

    s = await openCowStore('/s', { fileIo: sim, commitIntervalMs: 0 });
    expect(patched(s)).toEqual([false, true, true]);
    dev = s.head('v');
    const expected = { s1: [1, 1, 1], s2: [2, 1, 1], head: [2, 3, 1] }; // chunks 5, 7, 9
    const read = async (d: BlockDevice): Promise<number[]> => [await readChunk(d, 5), await readChunk(d, 7), await readChunk(d, 9)];
    expect(await read(s.snapshotView('v', 's1'))).toEqual(expected.s1);
    expect(await read(s.snapshotView('v', 's2'))).toEqual(expected.s2);
    expect(await read(dev)).toEqual(expected.head);
    // A write after the restart changes the head's patch only.
    await dev.write(9 * CHUNK, chunkOf(4), { fua: false });
    expect(await read(dev)).toEqual([2, 3, 4]);
    expect(await read(s.snapshotView('v', 's2'))).toEqual(expected.s2);
    const diff = await s.diff('v', 's1', null);
    expect(diff.extents).toEqual([{ offset: 5 * CHUNK, length: CHUNK }, { offset: 7 * CHUNK, length: CHUNK }, { offset: 9 * CHUNK, length: CHUNK }]);
    await s.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });
});
