// The registry's resize (over the in-memory store): a grow while a lease holds the head (the
// holder keeps its device and size, the export catalog announces the new size to the next
// INFO/GO), a shrink refused while the head is held and fenced while it runs.
import { describe, expect, it } from 'vitest';
import { StoreError } from '../../src/storage/types.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';

const MiB = 1024 * 1024;

async function setup(): Promise<{ store: FakeStore; reg: VolumeRegistry }> {
  const store = new FakeStore();
  const reg = new VolumeRegistry(store, { defaultExport: 'vm1', readOnly: false });
  await reg.createVolume({ name: 'vm1', size: MiB, chunkSize: 65536 });
  return { store, reg };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof StoreError) return e.code;
    throw e;
  }
  return 'OK';
}

describe('registry resize', () => {
  it('grows while the head is held: the holder keeps its size, the next lookup and the listing get the new one', async () => {
    const { reg } = await setup();
    expect(reg.list()[0]!.description).toBe('volume vm1: 1 MiB, 0 snapshots');
    const held = reg.acquire('vm1', () => { throw new Error('a grow must not revoke'); })!;
    expect(held.device.size).toBe(MiB);
    const r = await reg.resizeVolume('vm1', 3 * MiB, false);
    expect(r).toMatchObject({ name: 'vm1', size: 3 * MiB, previousSize: MiB, connections: 1 });
    expect(held.device.size).toBe(MiB);
    expect(reg.lookup('vm1')!.device.size).toBe(3 * MiB);
    expect(reg.lookup('vm1')!.description).toBe('volume vm1: 3 MiB, 0 snapshots');
    expect(reg.list()[0]!.description).toBe('volume vm1: 3 MiB, 0 snapshots');
    expect((await reg.volumePageSliced({ limit: 10 })).volumes[0]!.size).toBe(3 * MiB);
    held.release();
  });

  it('refuses a shrink while the head is held, without touching the store; fences the head while shrinking', async () => {
    const { store, reg } = await setup();
    await reg.resizeVolume('vm1', 4 * MiB, false);
    const held = reg.acquire('vm1', () => undefined)!;
    expect(await codeOf(reg.resizeVolume('vm1', MiB, true))).toBe('VOLUME_BUSY');
    expect(await codeOf(reg.resizeVolume('vm1', MiB, false))).toBe('SHRINK_NOT_CONFIRMED');
    expect(store.log.filter((l) => l.startsWith('resizeVolume'))).toEqual([`resizeVolume vm1 ${4 * MiB}`]);
    held.release();
    // While the shrink runs (held at the store), no client may attach the head.
    let open!: () => void;
    store.gate = new Promise<void>((r) => (open = r));
    const shrinking = reg.resizeVolume('vm1', MiB, true);
    await new Promise((r) => setImmediate(r));
    expect(reg.acquire('vm1', () => undefined)).toBeUndefined();
    open();
    store.gate = null;
    expect((await shrinking).size).toBe(MiB);
    const again = reg.acquire('vm1', () => undefined);
    expect(again?.device.size).toBe(MiB);
    again?.release();
  });
});
