// Snapshot identities: random per snapshot, persisted in the Node record (journal and checkpoint),
// or taken from the caller (an imported stream's).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import { GUID_PATTERN, legacyGuid } from '../../src/storage/guid.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-guid-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('snapshot guid', () => {
  it('is random per snapshot and survives a reopen from the journal and from a checkpoint', async () => {
    let s = await openCowStore(dir, { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 1024 * 1024 });
    const a = await s.createSnapshot('v', 'a');
    const b = await s.createSnapshot('v', 'b');
    expect(a.guid).toMatch(GUID_PATTERN);
    expect(b.guid).toMatch(GUID_PATTERN);
    expect(a.guid).not.toBe(b.guid);
    await s.close();
    s = await openCowStore(dir, { commitIntervalMs: 0 });
    expect(s.listSnapshots('v').map((x) => x.guid)).toEqual([a.guid, b.guid]);
    await s.checkpoint();
    await s.close();
    s = await openCowStore(dir, { commitIntervalMs: 0 });
    expect(s.listSnapshots('v').map((x) => x.guid)).toEqual([a.guid, b.guid]);
    await s.close();
  });

  it('takes a given identity (import), and refuses a malformed one', async () => {
    const s = await openCowStore(dir, { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 1024 * 1024 });
    const g = '0123456789abcdef0123456789abcdef';
    expect((await s.createSnapshot('v', 'a', 'd', g)).guid).toBe(g);
    await expect(s.createSnapshot('v', 'b', '', 'XYZ')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(s.listSnapshots('v').map((x) => x.name)).toEqual(['a']);
    await s.close();
  });

  it('of a snapshot recorded without one is derived from its records, the same at every open', () => {
    const g = legacyGuid(1700000000000, 'v', 7, 1700000001000, 's1');
    expect(g).toMatch(GUID_PATTERN);
    expect(legacyGuid(1700000000000, 'v', 7, 1700000001000, 's1')).toBe(g);
    expect(legacyGuid(1700000000000, 'v', 8, 1700000001000, 's1')).not.toBe(g);
  });
});
