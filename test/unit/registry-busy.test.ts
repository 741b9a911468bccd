// The volume registry's export names, leases and busy rules, over an in-memory store.
import { describe, expect, it } from 'vitest';
import { StoreError } from '../../src/storage/types.ts';
import { VolumeRegistry, generatedSnapshotBase } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';

const MiB = 1024 * 1024;

async function setup(opts: { readOnly?: boolean; revokeWaitMs?: number } = {}): Promise<{ store: FakeStore; reg: VolumeRegistry }> {
  const store = new FakeStore();
  const reg = new VolumeRegistry(store, {
    defaultExport: 'vm1', readOnly: opts.readOnly ?? false,
    now: () => new Date('2026-11-22T10:15:00.123Z'),
    ...(opts.revokeWaitMs !== undefined ? { revokeWaitMs: opts.revokeWaitMs } : {}),
  });
  await reg.createVolume({ name: 'vm1', size: MiB, chunkSize: 65536 });
  await reg.createVolume({ name: 'vm2', size: 2 * MiB });
  return { store, reg };
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (e instanceof StoreError) return e.code;
    throw e;
  }
  return 'OK';
}

describe('export names', () => {
  it('lists volumes then snapshot views, with descriptions', async () => {
    const { reg } = await setup();
    await reg.createSnapshot('vm1', 's1', 'before upgrade');
    await reg.createSnapshot('vm2', 'a', undefined);
    const list = reg.list();
    expect(list.map((e) => e.name)).toEqual(['vm1', 'vm2', 'vm1@s1', 'vm2@a']);
    expect(list[0]!.description).toBe('volume vm1: 1 MiB, 1 snapshot');
    expect(list[2]!.description).toMatch(/^1 MiB snapshot of vm1 taken 2026-.*Z, read-only: before upgrade$/);
  });

  it('resolves heads, snapshot views and the default export; unknown and malformed names are undefined', async () => {
    const { store, reg } = await setup();
    await reg.createSnapshot('vm1', 's1', undefined);
    expect(reg.lookup('vm1')!.device).toBe(store.head('vm1'));
    expect(reg.lookup('')!.name).toBe('vm1');
    expect(reg.lookup('')!.device).toBe(store.head('vm1'));
    const snap = reg.lookup('vm1@s1')!;
    expect(snap.device.readOnly).toBe(true);
    expect(snap.device).toBe(store.snapshotView('vm1', 's1'));
    for (const bad of ['nope', 'vm1@nope', 'nope@s1', 'vm1@', '@s1', 'vm1@s1@x', '.hidden', 'a/b']) {
      expect(reg.lookup(bad), bad).toBeUndefined();
      expect(reg.acquire(bad, () => {}), bad).toBeUndefined();
    }
  });

  it('serves heads read-only with --read-only, refusing writes', async () => {
    const { reg } = await setup({ readOnly: true });
    const d = reg.lookup('vm1')!.device;
    expect(d.readOnly).toBe(true);
    expect(reg.lookup('vm1')!.device).toBe(d); // one wrapper per head
    await expect(d.write(0, Buffer.alloc(512), { fua: false })).rejects.toMatchObject({ errno: 'EROFS' });
  });

  it('counts connections per export and keeps request counters', async () => {
    const { reg } = await setup();
    const a = reg.acquire('vm1', () => {})!;
    const b = reg.acquire('', () => {})!;
    expect(a.counters).toBe(b.counters);
    a.counters.requests += 3;
    a.counters.bytesWritten += 4096;
    expect(reg.volumeInfo('vm1').connections).toBe(2);
    a.release();
    a.release(); // idempotent
    expect(reg.volumeInfo('vm1').connections).toBe(1);
    const vm1 = reg.stats().exports.find((e) => e.name === 'vm1')!;
    expect(vm1).toEqual({ name: 'vm1', volume: 'vm1', snapshot: null, connections: 1, requests: 3, bytesRead: 0, bytesWritten: 4096, errors: 0 });
    b.release();
  });
});

describe('snapshots', () => {
  it('generates VOLUME-YYYYMMDDTHHMMSSZ names, unique with -2, -3', async () => {
    const { reg } = await setup();
    const names = [];
    for (let i = 0; i < 3; i++) names.push((await reg.createSnapshot('vm1', undefined, undefined)).name);
    expect(names).toEqual(['vm1-20261122T101500Z', 'vm1-20261122T101500Z-2', 'vm1-20261122T101500Z-3']);
    expect(generatedSnapshotBase('v'.repeat(128), new Date(0)).length).toBeLessThanOrEqual(120);
  });

  it('refuses taken and invalid names', async () => {
    const { reg } = await setup();
    await reg.createSnapshot('vm1', 's1', undefined);
    expect(await codeOf(reg.createSnapshot('vm1', 's1', undefined))).toBe('NAME_TAKEN');
    expect(await codeOf(reg.createSnapshot('vm1', 'a@b', undefined))).toBe('INVALID_NAME');
    expect(await codeOf(reg.createSnapshot('vm1', '-x', undefined))).toBe('INVALID_NAME');
    expect(await codeOf(reg.createSnapshot('vm1', 'x'.repeat(129), undefined))).toBe('INVALID_NAME');
    expect(await codeOf(reg.createSnapshot('nope', 's1', undefined))).toBe('VOLUME_NOT_FOUND');
    expect(await codeOf(reg.createVolume({ name: 'bad name', size: MiB }))).toBe('INVALID_NAME');
  });

  it('shows a snapshot being created as state creating, then ready', async () => {
    const { store, reg } = await setup();
    let open!: () => void;
    store.gate = new Promise((r) => { open = r; });
    const p = reg.createSnapshot('vm1', 's1', 'x');
    await new Promise((r) => setImmediate(r));
    expect(reg.listSnapshots('vm1').map((s) => [s.name, s.state])).toEqual([['s1', 'creating']]);
    expect(reg.lookup('vm1@s1')).toBeUndefined();
    store.gate = null;
    open();
    const s = await p;
    expect(s.state).toBe('ready');
    expect(reg.listSnapshots('vm1').map((x) => [x.name, x.state])).toEqual([['s1', 'ready']]);
  });

  it('shows a snapshot being deleted as state deleting, hidden from NBD meanwhile', async () => {
    const { store, reg } = await setup();
    await reg.createSnapshot('vm1', 's1', undefined);
    expect(reg.list().map((e) => e.name)).toEqual(['vm1', 'vm2', 'vm1@s1']); // the catalog, loaded as a server's is
    let open!: () => void;
    store.gate = new Promise((r) => { open = r; });
    // The store drops it at once and then commits (the fake as the engine): the listing must not
    // look it up in the store meanwhile (it did, and a listing during a retention run failed).
    const p = reg.deleteSnapshot('vm1', 's1');
    await new Promise((r) => setImmediate(r));
    expect(reg.listSnapshots('vm1').map((s) => [s.name, s.state])).toEqual([['s1', 'deleting']]);
    expect(reg.list().map((e) => e.name)).toEqual(['vm1', 'vm2']);
    expect(reg.acquire('vm1@s1', () => {})).toBeUndefined();
    store.gate = null;
    open();
    await p;
    expect(reg.listSnapshots('vm1')).toEqual([]);
  });

  it('counts snapshot exports in stats once used, and forgets them when deleted', async () => {
    const { reg } = await setup();
    await reg.createSnapshot('vm1', 's1', undefined);
    const l = reg.acquire('vm1@s1', () => {})!;
    l.counters.requests++;
    l.counters.bytesRead += 512;
    l.release();
    expect(reg.stats().exports.map((e) => [e.name, e.snapshot, e.requests, e.bytesRead])).toEqual([
      ['vm1', null, 0, 0], ['vm2', null, 0, 0], ['vm1@s1', 's1', 1, 512],
    ]);
    await reg.deleteSnapshot('vm1', 's1');
    expect(reg.stats().exports.map((e) => e.name)).toEqual(['vm1', 'vm2']);
  });

  it('serialises changes to one volume, in call order', async () => {
    const { store, reg } = await setup();
    let open!: () => void;
    store.gate = new Promise((r) => { open = r; });
    const ops = [
      reg.createSnapshot('vm1', 'a', undefined),
      reg.rollback('vm1', 'a', false),
      reg.createSnapshot('vm1', 'b', undefined),
      reg.deleteSnapshot('vm1', 'a'),
    ];
    await new Promise((r) => setImmediate(r));
    store.gate = null;
    open();
    await Promise.all(ops);
    expect(store.log.slice(2)).toEqual(['createSnapshot vm1@a', 'rollback vm1@a', 'createSnapshot vm1@b', 'deleteSnapshot vm1@a']);
  });
});

describe('busy rules', () => {
  it('refuses rollback while the head is exported; snapshot exports do not count', async () => {
    const { store, reg } = await setup();
    await reg.createSnapshot('vm1', 's1', undefined);
    const view = reg.acquire('vm1@s1', () => {})!;
    expect(await reg.rollback('vm1', 's1', false)).toEqual({ disconnected: 0 });
    const revoked: string[] = [];
    const head = reg.acquire('vm1', (r) => revoked.push(r))!;
    expect(await codeOf(reg.rollback('vm1', 's1', false))).toBe('VOLUME_BUSY');
    expect(revoked).toEqual([]);
    expect(store.log.filter((l) => l.startsWith('rollback'))).toEqual(['rollback vm1@s1']);
    head.release();
    view.release();
  });

  it('forced rollback revokes head leases, waits for release, refuses new ones meanwhile, then rolls back', async () => {
    const { store, reg } = await setup();
    await store.head('vm1').write(0, Buffer.alloc(512, 1), { fua: false });
    await reg.createSnapshot('vm1', 's1', undefined);
    await store.head('vm1').write(0, Buffer.alloc(512, 2), { fua: false });
    const revoked: string[] = [];
    const l1 = reg.acquire('vm1', (r) => revoked.push(`l1: ${r}`))!;
    const l2 = reg.acquire('', (r) => revoked.push(`l2: ${r}`))!;
    const other = reg.acquire('vm2', (r) => revoked.push(`vm2: ${r}`))!;
    let done = false;
    const p = reg.rollback('vm1', 's1', true).then((r) => { done = true; return r; });
    await new Promise((r) => setTimeout(r, 20));
    expect(revoked).toEqual([
      "l1: volume 'vm1' is being rolled back to snapshot 's1'",
      "l2: volume 'vm1' is being rolled back to snapshot 's1'",
    ]);
    expect(done).toBe(false);
    expect(store.log).not.toContain('rollback vm1@s1');
    expect(reg.acquire('vm1', () => {})).toBeUndefined(); // fenced while waiting
    l1.release();
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    l2.release();
    expect(await p).toEqual({ disconnected: 2 });
    expect(store.headData('vm1').readUInt8(0)).toBe(1);
    const again = reg.acquire('vm1', () => {});
    expect(again).toBeDefined();
    again!.release();
    other.release();
  });

  it('forced rollback gives up with VOLUME_BUSY when a session never closes, and changes nothing', async () => {
    const { store, reg } = await setup({ revokeWaitMs: 50 });
    await reg.createSnapshot('vm1', 's1', undefined);
    const stuck = reg.acquire('vm1', () => {})!;
    expect(await codeOf(reg.rollback('vm1', 's1', true))).toBe('VOLUME_BUSY');
    expect(store.log).not.toContain('rollback vm1@s1');
    stuck.release();
  });

  it('refuses to delete an exported snapshot; deletes it once released', async () => {
    const { store, reg } = await setup();
    await reg.createSnapshot('vm1', 's1', undefined);
    const view = reg.acquire('vm1@s1', () => {})!;
    expect(reg.listSnapshots('vm1')[0]).toMatchObject({ name: 's1', exports: ['vm1@s1'], connections: 1 });
    expect(await codeOf(reg.deleteSnapshot('vm1', 's1'))).toBe('SNAPSHOT_BUSY');
    expect(store.listSnapshots('vm1').map((s) => s.name)).toEqual(['s1']);
    view.release();
    await reg.deleteSnapshot('vm1', 's1');
    expect(store.listSnapshots('vm1')).toEqual([]);
    expect(await codeOf(reg.deleteSnapshot('vm1', 's1'))).toBe('SNAPSHOT_NOT_FOUND');
  });

  it('refuses to delete an exported volume unless forced; force revokes head and snapshot leases', async () => {
    const { store, reg } = await setup();
    await reg.createSnapshot('vm1', 's1', undefined);
    const revoked: string[] = [];
    const head = reg.acquire('vm1', () => { revoked.push('head'); queueMicrotask(() => head.release()); })!;
    const view = reg.acquire('vm1@s1', () => { revoked.push('view'); queueMicrotask(() => view.release()); })!;
    expect(await codeOf(reg.deleteVolume('vm1', false))).toBe('VOLUME_BUSY');
    expect(store.volumes.has('vm1')).toBe(true);
    // Its snapshot goes with it only when asked, and a refusal revokes nobody.
    expect(await codeOf(reg.deleteVolume('vm1', true))).toBe('VOLUME_HAS_SNAPSHOTS');
    expect(revoked).toEqual([]);
    expect(await reg.deleteVolume('vm1', true, true)).toEqual({ disconnected: 2, snapshots: ['s1'], clones: [] });
    expect(revoked).toEqual(['head', 'view']);
    expect(store.volumes.has('vm1')).toBe(false);
    expect(reg.list().map((e) => e.name)).toEqual(['vm2']);
  });

  it('revokeAll asks every session to go and refuses new ones', async () => {
    const { reg } = await setup();
    const seen: string[] = [];
    const a = reg.acquire('vm1', (r) => { seen.push(r); a.release(); })!;
    const b = reg.acquire('vm2', (r) => { seen.push(r); b.release(); })!;
    await reg.revokeAll('server stopping');
    expect(seen).toEqual(['server stopping', 'server stopping']);
    expect(reg.acquire('vm1', () => {})).toBeUndefined();
  });

  it('clone makes a new writable export independent of its origin', async () => {
    const { store, reg } = await setup();
    await store.head('vm1').write(0, Buffer.alloc(512, 7), { fua: false });
    await reg.createSnapshot('vm1', 's1', undefined);
    const c = await reg.clone('vm1', 's1', 'c1');
    expect(c).toMatchObject({ name: 'c1', origin: { volume: 'vm1', snapshot: 's1' }, size: MiB });
    expect(reg.snapshotInfo('vm1', 's1').clones).toEqual(['c1']);
    const lease = reg.acquire('c1', () => {})!;
    expect(lease.device.readOnly).toBe(false);
    lease.release();
    expect(await codeOf(reg.clone('vm1', 's1', 'vm2'))).toBe('NAME_TAKEN');
  });
});
