// Many exports: the NBD list and lookups come from the registry's catalog (no store call that
// walks a block map once it is loaded), follow every change made through the registry, recover
// from a failed change, and the control socket's volume.list/snapshot.list page their results.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureCli } from '../helpers/capture-cli.ts';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runControlCli } from '../../src/cli/control-commands.ts';
import { LIST_PAGE_DEFAULT, LIST_PAGE_MAX } from '../../src/control/methods.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { ControlClient, ControlCallError } from '../../src/control/client.ts';
import { StoreError } from '../../src/storage/types.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';

const KiB = 1024;

/** Counts the store calls that compute space figures (each walks a block map in the engine). */
function spyWalks(store: FakeStore): () => number {
  const spies = (['listVolumes', 'volumeInfo', 'listSnapshots', 'snapshotInfo'] as const).map((m) => vi.spyOn(store, m));
  return () => spies.reduce((n, s) => n + s.mock.calls.length, 0);
}

async function populated(volumes: number, snapshots: number): Promise<{ store: FakeStore; reg: VolumeRegistry }> {
  const store = new FakeStore();
  for (let v = 0; v < volumes; v++) {
    const name = `vol${String(v).padStart(3, '0')}`;
    await store.createVolume({ name, size: 64 * KiB });
    for (let s = 0; s < snapshots; s++) await store.createSnapshot(name, `s${s}`);
  }
  return { store, reg: new VolumeRegistry(store, { defaultExport: 'vol000', readOnly: false }) };
}

describe('the NBD export list with many exports', () => {
  it('lists every volume then every snapshot, and LIST and INFO lookups do no space walk once loaded', async () => {
    const { store, reg } = await populated(30, 10);
    const first = reg.list();
    expect(first).toHaveLength(330);
    expect(first[0]).toEqual({ name: 'vol000', description: 'volume vol000: 64 KiB, 10 snapshots' });
    expect(first[30]!.name).toBe('vol000@s0');
    expect(first[329]!.name).toBe('vol029@s9');
    const walks = spyWalks(store);
    for (let i = 0; i < 5; i++) expect(reg.list()).toEqual(first);
    for (const e of first) expect(reg.lookup(e.name)).toMatchObject({ name: e.name, description: e.description });
    expect(reg.lookup('vol000@nope')).toBeUndefined();
    expect(reg.lookup('nope')).toBeUndefined();
    expect(walks()).toBe(0);
  });

  it('follows creates, deletes and clones made through the registry', async () => {
    const { store, reg } = await populated(2, 1);
    reg.list();
    await reg.createVolume({ name: 'new', size: 64 * KiB });
    await reg.createSnapshot('new', 'a', 'first');
    await reg.clone('vol000', 's0', 'copy');
    await reg.deleteSnapshot('vol001', 's0');
    const walks = spyWalks(store);
    const names = reg.list().map((e) => e.name);
    expect(names).toEqual(['vol000', 'vol001', 'new', 'copy', 'vol000@s0', 'new@a']);
    expect(reg.lookup('new@a')?.description).toMatch(/snapshot of new taken .*, read-only: first$/);
    expect(reg.lookup('new')?.description).toBe('volume new: 64 KiB, 1 snapshot');
    expect(reg.lookup('copy')?.description).toBe('volume copy: 64 KiB, clone of vol000@s0, 0 snapshots');
    // The registry's own answers (each change returns the new info) kept the catalog current.
    expect(walks()).toBe(0);
    await reg.deleteVolume('new', false, true);
    expect(reg.list().map((e) => e.name)).toEqual(['vol000', 'vol001', 'copy', 'vol000@s0']);
    expect(reg.lookup('new@a')).toBeUndefined();
  });

  it('a change that failed part-way is reloaded from the store for that volume', async () => {
    const { store, reg } = await populated(2, 1);
    reg.list();
    // The store takes the snapshot but reports failure (as an uncommitted change would).
    const real = store.createSnapshot.bind(store);
    vi.spyOn(store, 'createSnapshot').mockImplementationOnce(async (v, n, d) => {
      await real(v, n, d);
      throw new StoreError('NO_SPACE', 'commit failed');
    });
    await expect(reg.createSnapshot('vol001', 'half', undefined)).rejects.toThrow('commit failed');
    expect(reg.list().map((e) => e.name)).toContain('vol001@half');
    expect(reg.lookup('vol001')?.description).toBe('volume vol001: 64 KiB, 2 snapshots');
  });

  it('listSnapshots: false leaves snapshots out of the list; they are still found by name', async () => {
    const store = (await populated(3, 4)).store;
    const reg = new VolumeRegistry(store, { defaultExport: 'vol000', readOnly: false, listSnapshots: false });
    expect(reg.list().map((e) => e.name)).toEqual(['vol000', 'vol001', 'vol002']);
    expect(reg.lookup('vol002@s3')?.device.readOnly).toBe(true);
  });
});

describe('volume.list and snapshot.list pages', () => {
  it('pages volumes in name order; next is the after of the following page', async () => {
    const { reg } = await populated(0, 0);
    for (const n of ['m', 'b', 'z', 'a', 'k']) await reg.createVolume({ name: n, size: 64 * KiB });
    expect(reg.listVolumes().map((v) => v.name)).toEqual(['a', 'b', 'k', 'm', 'z']);
    const p1 = await reg.volumePageSliced({ limit: 2 });
    expect([p1.volumes.map((v) => v.name), p1.next]).toEqual([['a', 'b'], 'b']);
    // A volume created between pages, before the boundary, does not shift the next page.
    await reg.createVolume({ name: 'aa', size: 64 * KiB });
    const p2 = await reg.volumePageSliced({ after: p1.next!, limit: 2 });
    expect([p2.volumes.map((v) => v.name), p2.next]).toEqual([['k', 'm'], 'm']);
    await reg.deleteVolume('m', false); // the boundary itself may go
    const p3 = await reg.volumePageSliced({ after: p2.next!, limit: 2 });
    expect([p3.volumes.map((v) => v.name), p3.next]).toEqual([['z'], null]);
    expect(await reg.volumePageSliced({ after: 'zz', limit: 2 })).toEqual({ volumes: [], next: null });
  });

  it('pages snapshots oldest first; a vanished after is SNAPSHOT_NOT_FOUND', async () => {
    const { reg } = await populated(1, 5);
    const p1 = await reg.snapshotPageSliced('vol000', { limit: 3 });
    expect([p1.snapshots.map((s) => s.name), p1.next]).toEqual([['s0', 's1', 's2'], 's2']);
    const p2 = await reg.snapshotPageSliced('vol000', { after: 's2', limit: 3 });
    expect([p2.snapshots.map((s) => s.name), p2.next]).toEqual([['s3', 's4'], null]);
    await reg.deleteSnapshot('vol000', 's2');
    await expect(reg.snapshotPageSliced('vol000', { after: 's2' })).rejects.toMatchObject({ code: 'SNAPSHOT_NOT_FOUND' });
  });

  describe('over the control socket and the CLI', () => {
    const dir = mkdtempSync(join(tmpdir(), 'snapnbd-paging-'));
    let server: ControlServer;
    let client: ControlClient;
    const VOLUMES = LIST_PAGE_DEFAULT + 5;

    beforeAll(async () => {
      const { reg } = await populated(VOLUMES, 0);
      await reg.createVolume({ name: 'snappy', size: 64 * KiB });
      for (let i = 0; i < 7; i++) await reg.createSnapshot('snappy', `t${i}`, undefined);
      server = await startControlServer(join(dir, 'control.sock'), {
        registry: reg, serverInfo: () => ({ version: '0.1.0', listeners: [], startedAt: new Date() }),
      });
      client = await ControlClient.connect(server.path);
    });
    afterAll(async () => {
      client.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    });

    function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
      return captureCli(() => runControlCli([...argv, '--control', server.path]));
    }

    it(`volume.list answers ${LIST_PAGE_DEFAULT} by default, at most ${LIST_PAGE_MAX}`, async () => {
      const r = await client.call<{ volumes: { name: string }[]; next: string | null }>('volume.list');
      expect(r.volumes).toHaveLength(LIST_PAGE_DEFAULT);
      expect(r.next).toBe(r.volumes.at(-1)!.name);
      await expect(client.call('volume.list', { limit: LIST_PAGE_MAX + 1 })).rejects.toBeInstanceOf(ControlCallError);
      await expect(client.call('volume.list', { limit: 0 })).rejects.toBeInstanceOf(ControlCallError);
      const s = await client.call<{ snapshots: { name: string }[]; next: string | null }>('snapshot.list', { volume: 'snappy', after: 't4', limit: 1 });
      expect([s.snapshots.map((x) => x.name), s.next]).toEqual([['t5'], 't5']);
    });

    it('the CLI fetches every page unless --limit asks for one', async () => {
      const all = await cli('volume', 'list', '--json');
      expect(all.code).toBe(0);
      const parsed = JSON.parse(all.out) as { volumes: { name: string }[]; next: string | null };
      expect(parsed.volumes).toHaveLength(VOLUMES + 1);
      expect(parsed.next).toBeNull();
      const page = await cli('volume', 'list', '--limit', '2', '--after', 'vol001');
      expect(page.out.trim().split('\n').slice(1)).toEqual([
        expect.stringMatching(/^vol002\s/), expect.stringMatching(/^vol003\s/), '(more: --after vol003)',
      ]);
      const snaps = await cli('snapshot', 'list', 'snappy', '--limit', '3', '--after', 't3');
      expect(snaps.out.trim().split('\n').slice(1).map((l) => l.split(/\s+/)[0])).toEqual(['t4', 't5', 't6']);
      expect((await cli('volume', 'list', '--limit', 'x')).code).toBe(2);
    });
  });
});
