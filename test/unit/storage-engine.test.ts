// Engine behaviour beyond the model test: space going back to the file system, extents, fast
// zero, space accounting, backing-file change detection, ENOSPC, and `snapnbd check`.
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, utimes, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openCowStore, openStore } from '../../src/storage/index.ts';
import { checkStore } from '../../src/storage/check.ts';
import { runCheck } from '../../src/cli/check.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import { CrashPoint } from '../../src/storage/file-io.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { StorageError, UncommittedChangeError, type BlockDevice } from '../../src/storage/device.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { toRpcError } from '../../src/control/errors.ts';
import { StoreError } from '../../src/storage/types.ts';
import { NbdErrno } from '../../src/protocol/constants.ts';
import { toNbdErrno } from '../../src/protocol/errors.ts';

const MiB = 1024 * 1024;
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-eng-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
}

/** A store on the simulated file system: volume 'v' (16 MiB) with pattern 1 in its first MiB, durable. */
async function simStoreWithMiB(): Promise<{ sim: SimFileIo; s: CowStore; dev: BlockDevice }> {
  const sim = new SimFileIo();
  const s = await openCowStore('/s', { fileIo: sim, commitIntervalMs: 0, segmentBytes: MiB });
  await s.createVolume({ name: 'v', size: 16 * MiB, chunkSize: 65536 });
  const dev = s.head('v');
  await dev.write(0, pattern(MiB, 1), { fua: true });
  return { sim, s, dev };
}

describe('space', () => {
  it('fill, snapshot, trim, delete snapshot: allocated bytes fall back', async () => {
    const s = await openCowStore(join(dir, 's'), { commitIntervalMs: 0, segmentBytes: 4 * MiB });
    await s.createVolume({ name: 'v', size: 64 * MiB });
    const dev = s.head('v');
    const base = s.stats().allocatedBytes;
    for (let off = 0; off < 32 * MiB; off += MiB) await dev.write(off, pattern(MiB, off), { fua: false });
    await s.flush();
    const full = s.stats().allocatedBytes;
    expect(full - base).toBeGreaterThanOrEqual(32 * MiB);
    await s.createSnapshot('v', 'snap');
    await dev.trim(0, 32 * MiB, { fua: false });
    await s.flush();
    await s.settle();
    // The snapshot still holds everything.
    expect(s.stats().allocatedBytes).toBeGreaterThanOrEqual(full - MiB);
    expect(s.snapshotInfo('v', 'snap').space.used).toBe(32 * MiB);
    await s.deleteSnapshot('v', 'snap');
    await s.flush();
    await s.settle();
    const after = s.stats().allocatedBytes;
    expect(after).toBeLessThan(base + MiB);
    expect(s.stats().liveBytes).toBe(0);
    expect((await readdir(join(dir, 's'))).filter((n) => n.startsWith('seg-'))).toEqual([]);
    await s.close();
  });

  it('overwrite cycles with snapshots keep the store bounded', async () => {
    const s = await openCowStore(join(dir, 's'), { commitIntervalMs: 0, segmentBytes: 2 * MiB });
    await s.createVolume({ name: 'v', size: 8 * MiB, chunkSize: 65536 });
    const dev = s.head('v');
    for (let round = 0; round < 12; round++) {
      for (let off = 0; off < 4 * MiB; off += MiB) await dev.write(off, pattern(MiB, round), { fua: false });
      await s.createSnapshot('v', `r${round}`);
      if (round >= 2) await s.deleteSnapshot('v', `r${round - 2}`);
    }
    await s.flush();
    await s.settle();
    // 2 snapshots + head of 4 MiB each at most, plus metadata.
    expect(s.stats().liveBytes).toBeLessThanOrEqual(12 * MiB);
    expect(s.stats().allocatedBytes).toBeLessThan(16 * MiB);
    await s.close();
  });

  it('space accounting: referenced, used, written', async () => {
    const s = await openStore(join(dir, 's'), { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 4 * MiB, chunkSize: 65536 });
    const dev = s.head('v');
    await dev.write(0, pattern(MiB, 1), { fua: false });
    await s.createSnapshot('v', 'a');
    await dev.write(0, pattern(256 * 1024, 2), { fua: false });
    await dev.write(2 * MiB, pattern(128 * 1024, 3), { fua: false });
    const a = s.snapshotInfo('v', 'a').space;
    expect(a).toEqual({ referenced: MiB, used: 256 * 1024, written: MiB });
    const h = s.volumeInfo('v').space;
    expect(h).toEqual({ referenced: MiB + 128 * 1024, used: 384 * 1024, written: 384 * 1024 });
    await s.close();
  });
});

describe('extents and zeroing', () => {
  it('reports data, holes over the backing file, and zero holes past it', async () => {
    const backing = join(dir, 'base.img');
    await writeFile(backing, pattern(MiB, 5));
    const s = await openStore(join(dir, 's'), { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 4 * MiB, backing, chunkSize: 65536 });
    const dev = s.head('v');
    await dev.write(65536, pattern(65536, 1), { fua: false });
    await dev.zero(131072, 65536, { fua: false, noHole: false, fast: true }); // over backing: zero entry
    expect(await dev.extents(0, 4 * MiB)).toEqual([
      { length: 65536, hole: true, zero: false },
      { length: 65536, hole: false, zero: false },
      { length: 65536, hole: true, zero: true },
      { length: MiB - 3 * 65536, hole: true, zero: false },
      { length: 3 * MiB, hole: true, zero: true },
    ]);
    const got = Buffer.alloc(3 * 65536);
    await dev.read(0, got.length, got);
    expect(got.subarray(0, 65536).equals(pattern(MiB, 5).subarray(0, 65536))).toBe(true);
    expect(got.subarray(131072).every((x) => x === 0)).toBe(true);
    // NO_HOLE over whole chunks: no data written, reported allocated and zero; reads zeros.
    await dev.zero(0, 65536, { fua: false, noHole: true, fast: true });
    expect((await dev.extents(0, 65536))[0]).toEqual({ length: 65536, hole: false, zero: true });
    await dev.read(0, 65536, got.subarray(0, 65536));
    expect(got.subarray(0, 65536).every((x) => x === 0)).toBe(true);
    // A partial write into it merges with zeros, not with the backing file.
    await dev.write(100, Buffer.from('abc'), { fua: false });
    await dev.read(0, 65536, got.subarray(0, 65536));
    expect(got.subarray(100, 103).toString()).toBe('abc');
    expect(got.subarray(0, 100).every((x) => x === 0) && got.subarray(103, 65536).every((x) => x === 0)).toBe(true);
    expect((await dev.extents(0, 65536))[0]).toEqual({ length: 65536, hole: false, zero: false });
    await s.close();
    expect(createHash('sha256').update(await readFile(backing)).digest('hex'))
      .toBe(createHash('sha256').update(pattern(MiB, 5)).digest('hex'));
  });

  it('a 1 TiB sparse volume opens at once and reports one hole', async () => {
    const s = await openStore(join(dir, 's'), { commitIntervalMs: 0 });
    await s.createVolume({ name: 'big', size: 1024 * 1024 * MiB });
    await s.head('big').write(512 * 1024 * MiB, pattern(4096, 1), { fua: true });
    await s.createSnapshot('big', 's1');
    await s.close();
    const t = Date.now();
    const s2 = await openStore(join(dir, 's'), { commitIntervalMs: 0 });
    expect(Date.now() - t).toBeLessThan(10_000); // generous: a 2-core CI box; it takes milliseconds
    const ext = await s2.head('big').extents(0, 2 * 1024 * MiB);
    expect(ext).toEqual([{ length: 2 * 1024 * MiB, hole: true, zero: true }]);
    const d = await s2.diff('big', 's1', null);
    expect(d).toEqual({ extents: [], next: null });
    await s2.close();
  });
});

describe('backing file and faults', () => {
  it('a changed backing file is refused naming the file; the backing is never written', async () => {
    const backing = join(dir, 'base.img');
    await writeFile(backing, pattern(MiB, 5));
    const s = await openStore(join(dir, 's'), { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', backing });
    expect(s.volumeInfo('v').size).toBe(MiB);
    await s.head('v').write(0, Buffer.alloc(MiB, 1), { fua: true });
    await s.close();
    expect((await readFile(backing)).equals(pattern(MiB, 5))).toBe(true);
    const b = await readFile(backing);
    b[700000]! ^= 1;
    await writeFile(backing, b);
    await utimes(backing, new Date(2020, 1, 1), new Date(2020, 1, 1));
    const s2 = await openStore(join(dir, 's'), { commitIntervalMs: 0 });
    let err: unknown;
    try {
      s2.head('v');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('BACKING_CHANGED');
    expect((err as StoreError).message).toContain(backing);
    await s2.close();
  });

  it('out of space: the write fails with ENOSPC and the store stays consistent', async () => {
    const { sim, s, dev } = await simStoreWithMiB();
    sim.capacity = sim.usedBytes() + 256 * 1024;
    let failed: unknown = null;
    for (let off = MiB; off < 16 * MiB && !failed; off += MiB) {
      try {
        await dev.write(off, pattern(MiB, 2), { fua: false });
      } catch (e) {
        failed = e;
      }
    }
    expect(failed).toBeInstanceOf(StorageError);
    expect((failed as StorageError).errno).toBe('ENOSPC');
    sim.capacity = Infinity;
    await s.flush();
    const got = Buffer.alloc(MiB);
    await dev.read(0, MiB, got);
    expect(got.equals(pattern(MiB, 1))).toBe(true);
    await s.close();
    const r = await checkStore('/s', { repair: false, fileIo: sim });
    expect(r.problems).toEqual([]);
  });
});

describe('a control change whose commit fails', () => {
  it('says it is applied but not durable; the snapshot shows as creating until a commit succeeds', async () => {
    const { sim, s, dev } = await simStoreWithMiB();
    const reg = new VolumeRegistry(s, { defaultExport: 'v', readOnly: false });
    sim.capacity = sim.usedBytes(); // the journal append of the snapshot's record cannot grow its file
    let err: unknown = null;
    try {
      await reg.createSnapshot('v', 'a', undefined);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UncommittedChangeError);
    expect((err as StorageError).errno).toBe('ENOSPC');
    expect((err as Error).message).toMatch(/applied but not yet durable/);
    expect(toRpcError(err).toObject().data).toEqual({ code: 'NO_SPACE', applied: true });
    expect(reg.listSnapshots('v').map((x) => [x.name, x.state])).toEqual([['a', 'creating']]);
    sim.capacity = Infinity;
    // The head moves on; the snapshot keeps the point in time it was taken at.
    await dev.write(0, pattern(MiB, 2), { fua: false });
    expect(reg.listSnapshots('v')[0]?.state).toBe('creating');
    await s.flush();
    expect(reg.listSnapshots('v').map((x) => [x.name, x.state])).toEqual([['a', 'ready']]);
    await s.close();
    const s2 = await openCowStore('/s', { fileIo: sim, commitIntervalMs: 0, segmentBytes: MiB });
    const got = Buffer.alloc(MiB);
    await s2.snapshotView('v', 'a').read(0, MiB, got);
    expect(got.equals(pattern(MiB, 1))).toBe(true);
    await s2.head('v').read(0, MiB, got);
    expect(got.equals(pattern(MiB, 2))).toBe(true);
    await s2.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });
});

describe('checkpoint attempts that failed', () => {
  it('leave no journal file behind once one succeeds (check is clean after a clean close)', async () => {
    const { sim, s } = await simStoreWithMiB();
    sim.failDatasync = (p) => /journal-/.test(p);
    await expect(s.checkpoint()).rejects.toThrow(/journal-/);
    await expect(s.checkpoint()).rejects.toThrow(/journal-/);
    sim.failDatasync = null;
    await s.checkpoint();
    await s.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });
});

describe('a checkpoint whose superblock sync failed', () => {
  it('is retried under a new journal generation: the superblock that may have landed keeps its journal', async () => {
    const { sim, s, dev } = await simStoreWithMiB();
    sim.failDatasync = (p) => p.endsWith('snapnbd.sb');
    await expect(s.checkpoint()).rejects.toThrow(/snapnbd.sb/);
    sim.failDatasync = null;
    // The retry stops (power loss) once its checkpoint is written, before its superblock. The
    // first attempt's unsynced superblock write survives the power loss and names the first
    // attempt's journal; the retry's unsynced journal write is lost (every other unsynced
    // change survives: the draws say keep).
    sim.armCrash(CrashPoint.CheckpointWritten, 1);
    await expect(s.checkpoint()).rejects.toThrow();
    s.abandon();
    sim.crash(() => 0.1, 'random', { keepWrites: (p) => p.endsWith('snapnbd.sb') });
    const s2 = await openCowStore('/s', { fileIo: sim, commitIntervalMs: 0, segmentBytes: MiB });
    const got = Buffer.alloc(MiB);
    await s2.head('v').read(0, MiB, got);
    expect(got.equals(pattern(MiB, 1))).toBe(true);
    await s2.close();
  });
});

describe('a segment deleted while a commit holds it among its dirty segments', () => {
  it('is skipped by that commit instead of fdatasyncing its closed file', async () => {
    const io = new HoldFileIo(new SimFileIo());
    const s = await openCowStore('/s', { fileIo: io, commitIntervalMs: 0, segmentBytes: MiB });
    s.autoCompact = false;
    await s.createVolume({ name: 'v', size: 16 * MiB, chunkSize: 65536 });
    const dev = s.head('v');
    await dev.write(0, pattern(MiB, 1), { fua: true }); // segment 0: all 16 slots
    await dev.write(0, pattern(65536, 2), { fua: false }); // in place: segment 0 dirty again
    // A write to a fresh chunk goes to segment 1 (now dirty) and hangs there...
    const held = io.hold('seg-16-000001.dat', 'write');
    const failed = dev.write(MiB, pattern(65536, 3), { fua: false }).then(() => null, (e: unknown) => e);
    await held.reached;
    // ...while a FLUSH swaps both dirty segments and waits in segment 0's fdatasync.
    const sync0 = io.hold('seg-16-000000.dat', 'datasync');
    const flushed = s.flush().then(() => null, (e: unknown) => e);
    await sync0.reached;
    // The write fails: its slot goes back, segment 1 is empty and its file closed and deleted.
    held.release(new StorageError('EIO', 'injected write error'));
    expect(await failed).toBeInstanceOf(StorageError);
    await s.settle();
    sync0.release();
    expect(await flushed).toBeNull();
    await dev.write(2 * MiB, pattern(65536, 4), { fua: true }); // later commits work too
    const got = Buffer.alloc(65536);
    await dev.read(0, 65536, got);
    expect(got.equals(pattern(65536, 2))).toBe(true);
    await s.close();
  });
});

describe('snapnbd check', () => {
  it('finds a leaked segment file, repairs it, then reports clean', async () => {
    const d = join(dir, 's');
    const s = await openStore(d, { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 4 * MiB });
    await s.head('v').write(0, pattern(65536, 1), { fua: true });
    await s.close();
    await writeFile(join(d, 'seg-16-000099.dat'), pattern(65536, 2));
    expect(await runCheck(['--data-dir', d, '--json'])).toBe(1);
    const r = await checkStore(d, { repair: true });
    expect(r.problems.join('\n')).toMatch(/seg-16-000099\.dat is not referenced/);
    expect(r.repaired.length).toBe(1);
    expect(await runCheck(['--data-dir', d])).toBe(0);
    expect(await runCheck([])).toBe(2);
    expect(await runCheck(['--bogus'])).toBe(2);
  });
});

describe('after close', () => {
  it('reads, writes and FLUSH fail alike: STORE_CLOSED for the control side, ESHUTDOWN for NBD clients', async () => {
    const { s, dev } = await simStoreWithMiB();
    await s.close();
    const failures = await Promise.all([
      dev.read(0, 4096, Buffer.alloc(4096)), dev.write(0, pattern(4096, 2), { fua: false }), dev.flush(), s.flush(),
    ].map((p) => p.then(() => null, (e: unknown) => e)));
    for (const e of failures) {
      expect(e).toBeInstanceOf(StoreError);
      expect((e as StoreError).code).toBe('STORE_CLOSED');
      expect(toNbdErrno(e, 0)).toBe(NbdErrno.ESHUTDOWN);
    }
    await expect(s.createSnapshot('v', 'late')).rejects.toMatchObject({ code: 'STORE_CLOSED' });
  });
});
