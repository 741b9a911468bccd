// volume.list and snapshot.list pages are built in slices that yield the event loop
// (src/volumes/listing.ts): a page of thousands answers what the one-turn page answers, lets the
// loop turn meanwhile, and stays whole when snapshots or volumes are deleted or created between
// slices (the one deleted is left out, the one being deleted is listed as deleting).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import { callMethod, LIST_PAGE_MAX } from '../../src/control/methods.ts';
import { LIST_SLICE_ENTRIES } from '../../src/volumes/listing.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import type { SnapshotView } from '../../src/volumes/views.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';
import { countLoopTurns, EverySlice } from '../helpers/loop-turns.ts';

/** Thousands: more than ten slices. */
const SNAPSHOTS = 3000;
const VOLUMES = 3 * LIST_SLICE_ENTRIES + 7;
const SIZE = 512;

async function manySnapshots(): Promise<{ store: FakeStore; reg: VolumeRegistry }> {
  const store = new FakeStore();
  await store.createVolume({ name: 'v', size: SIZE });
  for (let i = 0; i < SNAPSHOTS; i++) await store.createSnapshot('v', `s${i}`);
  // The registry's export catalog reads the store when first asked.
  return { store, reg: new VolumeRegistry(store, { defaultExport: 'v', readOnly: false }) };
}

/** A slicer that runs `atFirst` inside its first yield: between the first and second slice. */
class RaceAtFirstYield extends EverySlice {
  private readonly atFirst: () => Promise<void>;
  constructor(atFirst: () => Promise<void>) {
    super();
    this.atFirst = atFirst;
  }
  override async yield(): Promise<void> {
    if (this.yields === 0) await this.atFirst();
    await super.yield();
  }
}

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise<void>((resolve) => setImmediate(resolve));
}

const names = (views: { name: string }[]): string[] => views.map((v) => v.name);

describe('sliced list pages', () => {
  it('a page of thousands of snapshots lets the event loop turn and answers the one-turn page', async () => {
    const { reg } = await manySnapshots();
    const oneTurn = { snapshots: reg.listSnapshots('v'), next: null }; // the one-turn walk
    expect(oneTurn.snapshots).toHaveLength(SNAPSHOTS);

    const slicer = new EverySlice();
    const turns = countLoopTurns();
    const sliced = await reg.snapshotPageSliced('v', { limit: SNAPSHOTS }, slicer);
    const ran = turns.stop();
    expect(sliced).toEqual(oneTurn);
    expect(slicer.yields).toBe(Math.ceil(SNAPSHOTS / LIST_SLICE_ENTRIES) - 1);
    expect(ran).toBeGreaterThanOrEqual(slicer.yields);

    // Pages join up: the second starts after the first's `next`.
    const first = await reg.snapshotPageSliced('v', { limit: 1000 }, new EverySlice());
    expect(first.next).toBe('s999');
    const second = await reg.snapshotPageSliced('v', { after: first.next!, limit: LIST_PAGE_MAX }, new EverySlice());
    expect([...names(first.snapshots), ...names(second.snapshots)]).toEqual(names(oneTurn.snapshots));
    expect(second.next).toBeNull();

    // snapshot.list answers the sliced page.
    const r = await callMethod('snapshot.list', { volume: 'v', limit: LIST_PAGE_MAX }, { registry: reg, serverInfo: () => ({ version: '', listeners: [], startedAt: new Date() }) }) as { snapshots: SnapshotView[]; next: string | null };
    expect(r.snapshots).toEqual(oneTurn.snapshots);
    expect(r.next).toBeNull();
  });

  it('a delete racing the walk: the deleted snapshot is left out, the one being deleted is listed as deleting, the page stays full', async () => {
    const { store, reg } = await manySnapshots();
    let release = (): void => {};
    let deleting: Promise<void> | null = null;
    const slicer = new RaceAtFirstYield(async () => {
      // Both later in the page than the first slice. s2000: gone from the store and the catalog.
      await reg.deleteSnapshot('v', 's2000');
      // Created between slices: after the names were taken, so on a later page.
      await reg.createSnapshot('v', 'late', undefined);
      // s1000: dropped by the store, its commit held (the registry lists it from its pending entry).
      store.gate = new Promise<void>((resolve) => { release = resolve; });
      deleting = reg.deleteSnapshot('v', 's1000');
      await until(() => !store.volumes.get('v')!.snaps.has('s1000'));
    });
    const limit = 2500;
    const page = await reg.snapshotPageSliced('v', { limit }, slicer);
    expect(slicer.yields).toBeGreaterThan(1);
    const expected = Array.from({ length: limit + 1 }, (_, i) => `s${i}`).filter((n) => n !== 's2000');
    expect(names(page.snapshots)).toEqual(expected);
    expect(page.snapshots.find((s) => s.name === 's1000')?.state).toBe('deleting');
    expect(page.snapshots.filter((s) => s.state !== 'ready').map((s) => s.name)).toEqual(['s1000']);
    expect(page.next).toBe(`s${limit}`);

    store.gate = null;
    release();
    await deleting;
    const rest = await reg.snapshotPageSliced('v', { after: page.next!, limit: LIST_PAGE_MAX }, new EverySlice());
    expect(names(rest.snapshots)).toEqual([...Array.from({ length: SNAPSHOTS - limit - 1 }, (_, i) => `s${limit + 1 + i}`), 'late']);
    expect(rest.next).toBeNull();
  });

  it('the volume deleted between slices: the page is refused whole (VOLUME_NOT_FOUND), never half', async () => {
    const { reg } = await manySnapshots();
    const racing = new RaceAtFirstYield(async () => {
      await reg.deleteVolume('v', false, true);
    });
    await expect(reg.snapshotPageSliced('v', { limit: SNAPSHOTS }, racing)).rejects.toMatchObject({ code: 'VOLUME_NOT_FOUND' });
  });

  it('a volume page yields between slices and leaves out a volume deleted meanwhile', async () => {
    const store = new FakeStore();
    const reg = new VolumeRegistry(store, { defaultExport: 'v0000', readOnly: false });
    const vname = (i: number): string => `v${String(i).padStart(4, '0')}`;
    for (let i = 0; i < VOLUMES; i++) await reg.createVolume({ name: vname(i), size: SIZE });
    const oneTurn = { volumes: reg.listVolumes(), next: null }; // the one-turn walk
    const slicer = new EverySlice();
    const turns = countLoopTurns();
    expect(await reg.volumePageSliced({ limit: VOLUMES }, slicer)).toEqual(oneTurn);
    expect(slicer.yields).toBe(Math.ceil(VOLUMES / LIST_SLICE_ENTRIES) - 1);
    expect(turns.stop()).toBeGreaterThanOrEqual(slicer.yields);

    const gone = vname(LIST_SLICE_ENTRIES + 3);
    const racing = new RaceAtFirstYield(async () => {
      await reg.deleteVolume(gone, false);
    });
    const limit = VOLUMES - 10;
    const page = await reg.volumePageSliced({ limit }, racing);
    expect(names(page.volumes)).toEqual(Array.from({ length: limit + 1 }, (_, i) => vname(i)).filter((n) => n !== gone));
    expect(page.next).toBe(vname(limit));
  });

  it('the engine lists the named snapshots of a slice as its whole list does, after deletes and creates too', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapnbd-listing-'));
    const s = await openCowStore(dir, { commitIntervalMs: 0 });
    try {
      const chunk = 65536;
      await s.createVolume({ name: 'v', size: 8 * chunk, chunkSize: chunk });
      const dev = s.head('v');
      // Each snapshot has written its own chunks: `written` depends on the one before it.
      for (let i = 0; i < 6; i++) {
        await dev.write(i * chunk, Buffer.alloc(chunk * (1 + (i % 2)), i + 1), { fua: false });
        await s.createSnapshot('v', `s${i}`);
      }
      const check = (want: string[]): void => {
        const whole = s.listSnapshots('v');
        const some = s.listSnapshots('v', new Set(want));
        expect(some).toEqual(whole.filter((x) => want.includes(x.name)));
      };
      check(['s4', 's1', 's3']);
      await s.deleteSnapshot('v', 's2');
      check(['s3', 's1', 's5', 's2']);
      await dev.write(7 * chunk, Buffer.alloc(chunk, 9), { fua: false });
      await s.createSnapshot('v', 'late');
      check(['late', 's3', 's0']);
      await s.deleteSnapshot('v', 's0');
      check(['s1', 'late']);
    } finally {
      await s.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
