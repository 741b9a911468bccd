// Volume resize in the engine (Store.resizeVolume): a grow while a device is held (it keeps its
// size, a new one has the new size), snapshots and their clones keeping their own size, the size
// surviving a reopen from the journal and from a checkpoint, shrink refusals and the space a
// shrink frees, and NodeMap.resize on shared maps. The seeded model test (storage-model.ts,
// `resizeProbability`) and the power-loss test cover crashes around a resize.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ENTRIES_PER_PAGE, NodeMap, UNMAPPED, type SlotRefs } from '../../src/storage/block-map.ts';
import { checkStore } from '../../src/storage/check.ts';
import { StorageError } from '../../src/storage/device.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { VOLUME_CHUNKS_MAX } from '../../src/storage/engine.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import { StoreError, StoreErrorCode } from '../../src/storage/types.ts';
import { patternBuf } from '../property/storage-model.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
let sim: SimFileIo;
let s: CowStore;

async function open(): Promise<CowStore> {
  s = await openCowStore('/s', { fileIo: sim, commitIntervalMs: 0, segmentBytes: MiB });
  s.autoCompact = false;
  return s;
}

async function readAll(dev: { size: number; read(o: number, l: number, b: Buffer): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(dev.size);
  await dev.read(0, b.length, b);
  return b;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<StoreError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e, `expected ${code}`).toBeInstanceOf(StoreError);
  expect((e as StoreError).code).toBe(code);
  return e as StoreError;
}

beforeEach(async () => {
  sim = new SimFileIo();
  await open();
});
afterEach(async () => {
  await s.close();
});

describe('grow', () => {
  it('a held device keeps its size and keeps working; a new one has the new size; data and size survive reopen', async () => {
    await s.createVolume({ name: 'v', size: MiB + 512, chunkSize: 4096 }); // ends inside a chunk
    const old = s.head('v');
    const data = patternBuf(MiB + 512, 1);
    await old.write(0, data, { fua: false });
    const info = await s.resizeVolume('v', 3 * MiB);
    expect(info.size).toBe(3 * MiB);
    expect(old.size).toBe(MiB + 512);
    // The old device still reads and writes within its size.
    await old.write(0, Buffer.alloc(512, 7), { fua: false });
    data.fill(7, 0, 512);
    expect((await readAll(old)).equals(data)).toBe(true);
    const dev = s.head('v');
    expect(dev).not.toBe(old);
    expect(dev.size).toBe(3 * MiB);
    const all = await readAll(dev);
    expect(all.subarray(0, data.length).equals(data)).toBe(true);
    expect(all.subarray(data.length).equals(Buffer.alloc(3 * MiB - data.length))).toBe(true); // the grown part reads zeros
    const tail = patternBuf(64 * KiB, 2);
    await dev.write(3 * MiB - tail.length, tail, { fua: true });
    await expect(dev.write(3 * MiB, Buffer.alloc(512), { fua: false })).rejects.toBeInstanceOf(StorageError);
    await s.close();
    await open();
    expect(s.volumeInfo('v').size).toBe(3 * MiB);
    const again = await readAll(s.head('v'));
    expect(again.subarray(0, data.length).equals(data)).toBe(true);
    expect(again.subarray(3 * MiB - tail.length).equals(tail)).toBe(true);
    // From a checkpoint too.
    await s.checkpoint();
    await s.close();
    await open();
    expect(s.head('v').size).toBe(3 * MiB);
    expect((await readAll(s.head('v'))).equals(again)).toBe(true);
    await s.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
    await open();
  });

  it('snapshots keep their size, a clone of an older snapshot has its size, diff spans the grown part', async () => {
    await s.createVolume({ name: 'v', size: MiB, chunkSize: 4096 });
    const a = patternBuf(MiB, 3);
    await s.head('v').write(0, a, { fua: false });
    await s.createSnapshot('v', 'small');
    await s.resizeVolume('v', 2 * MiB);
    await s.head('v').write(MiB + 4096, Buffer.alloc(4096, 9), { fua: false });
    await s.createSnapshot('v', 'big');
    expect(s.snapshotInfo('v', 'small').size).toBe(MiB);
    expect(s.snapshotInfo('v', 'big').size).toBe(2 * MiB);
    expect(s.snapshotView('v', 'small').size).toBe(MiB);
    expect((await readAll(s.snapshotView('v', 'small'))).equals(a)).toBe(true);
    await expect(s.snapshotView('v', 'small').read(MiB, 512, Buffer.alloc(512))).rejects.toBeInstanceOf(StorageError);
    const c = await s.clone('v', 'small', 'c');
    expect(c.size).toBe(MiB);
    expect((await readAll(s.head('c'))).equals(a)).toBe(true);
    const d = await s.diff('v', 'small', null);
    expect(d.extents).toEqual([{ offset: MiB + 4096, length: 4096 }]);
    await s.close();
    await open();
    expect(s.snapshotInfo('v', 'small').size).toBe(MiB);
    expect(s.volumeInfo('c').size).toBe(MiB);
    await s.checkpoint();
    await s.close();
    await open();
    expect(s.snapshotInfo('v', 'small').size).toBe(MiB);
    expect(s.snapshotInfo('v', 'big').size).toBe(2 * MiB);
    expect((await readAll(s.snapshotView('v', 'small'))).equals(a)).toBe(true);
  });

  it('rollback to a snapshot taken before a grow keeps the grown size; the part past the snapshot reads zeros', async () => {
    await s.createVolume({ name: 'v', size: MiB, chunkSize: 4096 });
    await s.head('v').write(0, patternBuf(MiB, 4), { fua: false });
    await s.createSnapshot('v', 'small');
    await s.resizeVolume('v', 2 * MiB);
    await s.head('v').write(MiB, Buffer.alloc(MiB, 5), { fua: false });
    await s.rollback('v', 'small');
    const all = await readAll(s.head('v'));
    expect(all.length).toBe(2 * MiB);
    expect(all.subarray(0, MiB).equals(patternBuf(MiB, 4))).toBe(true);
    expect(all.subarray(MiB).equals(Buffer.alloc(MiB))).toBe(true);
    await s.close();
    await open();
    expect((await readAll(s.head('v'))).equals(all)).toBe(true);
  });

  it('a backing-file volume grows past its backing, or over it: the grown part reads zeros, also after a rollback', async () => {
    const f = await sim.open('/b.img', 'create');
    const backing = patternBuf(100 * KiB, 6);
    await f.write(backing, 0, backing.length, 0);
    await f.datasync();
    await f.close();
    await sim.syncDir('/');
    await s.createVolume({ name: 'b', backing: '/b.img', chunkSize: 4096 });
    await s.resizeVolume('b', MiB);
    let all = await readAll(s.head('b'));
    expect(all.subarray(0, backing.length).equals(backing)).toBe(true);
    expect(all.subarray(backing.length).equals(Buffer.alloc(MiB - backing.length))).toBe(true);
    // Smaller than its backing, ending inside a chunk (unmapped, then written): growing does not
    // uncover the backing file's bytes past the old end.
    for (const written of [false, true]) {
      const name = written ? 'w' : 'u';
      const small = 40 * KiB + 512;
      await s.createVolume({ name, backing: '/b.img', size: small, chunkSize: 4096 });
      if (written) await s.head(name).write(small - 512, Buffer.alloc(512, 1), { fua: false });
      await s.createSnapshot(name, 'small');
      await s.resizeVolume(name, 200 * KiB);
      const want = Buffer.alloc(200 * KiB);
      backing.copy(want, 0, 0, small);
      if (written) want.fill(1, small - 512, small);
      all = await readAll(s.head(name));
      expect(all.equals(want), `${name}: grown part`).toBe(true);
      await s.head(name).write(small, Buffer.alloc(4096, 2), { fua: false });
      await s.rollback(name, 'small');
      expect((await readAll(s.head(name))).equals(want), `${name}: after a rollback to the smaller snapshot`).toBe(true);
      await s.close();
      await open();
      expect((await readAll(s.head(name))).equals(want), `${name}: after reopen`).toBe(true);
    }
  });

  it('an unavailable volume (its backing file changed) is refused, unchanged', async () => {
    const f = await sim.open('/c.img', 'create');
    await f.write(Buffer.alloc(64 * KiB, 1), 0, 64 * KiB, 0);
    await f.datasync();
    await s.createVolume({ name: 'c', backing: '/c.img', chunkSize: 4096 });
    await s.close();
    await f.write(Buffer.alloc(4096, 2), 0, 4096, 64 * KiB); // the backing file grew: not the one recorded
    await f.datasync();
    await f.close();
    await open();
    expect(s.volumeInfo('c').unavailable).not.toBeNull();
    await expectCode(s.resizeVolume('c', MiB), StoreErrorCode.BackingChanged);
    await expectCode(s.resizeVolume('c', 32 * KiB, { shrink: true }), StoreErrorCode.BackingChanged);
    expect(s.volumeInfo('c').size).toBe(64 * KiB);
  });

  it('sizes are checked: multiple of 512, at most VOLUME_CHUNKS_MAX chunks, an unknown volume', async () => {
    await s.createVolume({ name: 'v', size: MiB, chunkSize: 4096 });
    await expectCode(s.resizeVolume('v', MiB + 100), StoreErrorCode.InvalidArgument);
    await expectCode(s.resizeVolume('v', 0), StoreErrorCode.InvalidArgument);
    await expectCode(s.resizeVolume('v', VOLUME_CHUNKS_MAX * 4096 + 4096), StoreErrorCode.InvalidArgument);
    await expectCode(s.resizeVolume('nope', MiB), StoreErrorCode.VolumeNotFound);
    expect((await s.resizeVolume('v', MiB)).size).toBe(MiB); // the same size: nothing to do
    expect(s.volumeInfo('v').size).toBe(MiB);
  });
});

describe('shrink', () => {
  it('is refused without confirmation and while a snapshot is longer; frees the chunks past the end', async () => {
    await s.createVolume({ name: 'v', size: 4 * MiB, chunkSize: 4096 });
    const data = patternBuf(4 * MiB, 7);
    await s.head('v').write(0, data, { fua: true });
    const e = await expectCode(s.resizeVolume('v', MiB), StoreErrorCode.ShrinkNotConfirmed);
    expect(e.message).toContain('--shrink');
    await s.createSnapshot('v', 'keep');
    await s.clone('v', 'keep', 'kc');
    const e2 = await expectCode(s.resizeVolume('v', MiB, { shrink: true }), StoreErrorCode.VolumeHasSnapshots);
    expect(e2.message).toContain('keep');
    expect(e2.message).toContain('kc');
    expect(s.volumeInfo('v').size).toBe(4 * MiB);
    await s.deleteVolume('kc');
    await s.deleteSnapshot('v', 'keep');
    await s.flush();
    const live = s.stats().liveBytes;
    // Cut inside a chunk: the kept part of that chunk reads as before, the rest is gone.
    const cut = MiB + 1536;
    await s.resizeVolume('v', cut, { shrink: true });
    await s.flush();
    expect(s.stats().liveBytes).toBeLessThanOrEqual(live - 3 * MiB + 8192);
    expect((await readAll(s.head('v'))).equals(data.subarray(0, cut))).toBe(true);
    // Growing again brings zeros, not the old bytes (also in the chunk cut inside).
    await s.resizeVolume('v', 2 * MiB);
    const grown = await readAll(s.head('v'));
    expect(grown.subarray(0, cut).equals(data.subarray(0, cut))).toBe(true);
    expect(grown.subarray(cut).equals(Buffer.alloc(2 * MiB - cut))).toBe(true);
    await s.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
    await open();
    expect((await readAll(s.head('v'))).equals(grown)).toBe(true);
  });

  it('a snapshot no longer than the new size does not stop a shrink and keeps its data', async () => {
    await s.createVolume({ name: 'v', size: MiB, chunkSize: 4096 });
    await s.head('v').write(0, patternBuf(MiB, 8), { fua: false });
    await s.createSnapshot('v', 'small');
    await s.resizeVolume('v', 4 * MiB);
    await s.head('v').write(2 * MiB, Buffer.alloc(MiB, 1), { fua: false });
    await s.resizeVolume('v', 2 * MiB, { shrink: true });
    expect((await readAll(s.snapshotView('v', 'small'))).equals(patternBuf(MiB, 8))).toBe(true);
    expect((await readAll(s.head('v'))).subarray(0, MiB).equals(patternBuf(MiB, 8))).toBe(true);
  });
});

describe('NodeMap.resize', () => {
  function refs(): SlotRefs & { n: Map<number, number> } {
    const n = new Map<number, number>();
    return {
      n,
      ref: (x) => void n.set(x, (n.get(x) ?? 0) + 1),
      unref: (x) => {
        const c = (n.get(x) ?? 0) - 1;
        if (c === 0) n.delete(x);
        else n.set(x, c);
      },
      count: (x) => n.get(x) ?? 0,
    };
  }

  it('grows and cuts a shared map without touching the sharer; a cut gives back the slots only it held', () => {
    const r = refs();
    const m = new NodeMap(3 * ENTRIES_PER_PAGE, r);
    for (let c = 0; c < 3 * ENTRIES_PER_PAGE; c += 7) m.set(c, c + 1, 1);
    const snap = m.share();
    m.resize(5 * ENTRIES_PER_PAGE + 3);
    expect(snap.l1.pages.length).toBe(3);
    expect(m.l1.pages.length).toBe(6);
    m.checkValid();
    snap.checkValid();
    m.resize(ENTRIES_PER_PAGE + 10); // shared pages: the snapshot still holds every slot
    m.checkValid();
    snap.checkValid();
    expect(m.slot(518)).toBe(519); // chunks 7k are mapped to slot 7k + 1
    expect(m.nChunks).toBe(ENTRIES_PER_PAGE + 10);
    expect(snap.slot(525)).toBe(526);
    expect(snap.slot(1029)).toBe(1030);
    m.resize(2 * ENTRIES_PER_PAGE); // grown again: the cut chunks stay unmapped
    expect(m.slot(525)).toBe(UNMAPPED);
    m.resize(ENTRIES_PER_PAGE + 10);
    const held = r.n.size;
    snap.release();
    // Now only m's chunks hold slots: those below ENTRIES_PER_PAGE + 10.
    expect(r.n.size).toBeLessThan(held);
    for (const slot of r.n.keys()) expect(slot - 1).toBeLessThan(ENTRIES_PER_PAGE + 10);
    m.resize(10);
    m.checkValid();
    for (const slot of r.n.keys()) expect(slot - 1).toBeLessThan(10);
  });
});
