// Snapshot identities: random per snapshot, persisted in the Node record (journal and checkpoint),
// or taken from the caller (an imported stream's).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import { GUID_BYTES, GUID_PATTERN, legacyGuid } from '../../src/storage/guid.ts';
import {
  decodeSuperblock, encodeSuperblock, JOURNAL_HEADER_LEN, journalFile, Rec, RECORD_HEADER_LEN, scanRecords, SUPERBLOCK_FILE, SUPERBLOCK_SLOT,
} from '../../src/storage/format.ts';

/** Rewrites a closed store as the format was before identities: Node records without the field. */
async function stripGuids(dataDir: string): Promise<void> {
  const sbPath = join(dataDir, SUPERBLOCK_FILE);
  const sbBuf = await readFile(sbPath);
  const sbs = [0, 1].map((i) => decodeSuperblock(sbBuf.subarray(i * SUPERBLOCK_SLOT, (i + 1) * SUPERBLOCK_SLOT)));
  const sb = sbs.flatMap((r) => (r.ok ? [r.sb] : [])).sort((x, y) => y.seq - x.seq)[0]!;
  const jPath = join(dataDir, journalFile(sb.journalGen));
  const j = await readFile(jPath);
  const out: Buffer[] = [j.subarray(0, JOURNAL_HEADER_LEN)];
  let pos = JOURNAL_HEADER_LEN;
  let checkpointLen = 0;
  let stripped = 0;
  for (const r of scanRecords(j, JOURNAL_HEADER_LEN)) {
    let rec = j.subarray(r.at, r.end);
    // Snapshots' Node records (kind byte 1 after id and volume id); heads never carried one.
    if ((r.rec.type === Rec.Node || r.rec.type === Rec.NodeCp) && rec.readUInt8(RECORD_HEADER_LEN + 8) === 1) {
      // An older store's record: neither the guid nor the snapshot size that follows it (8 bytes).
      const payload = rec.subarray(RECORD_HEADER_LEN, rec.length - GUID_BYTES - 8);
      rec = Buffer.concat([Buffer.alloc(RECORD_HEADER_LEN), payload]);
      rec.writeUInt32LE(payload.length, 0);
      rec.writeUInt8(r.rec.type, 8);
      rec.writeUInt32LE(crc32(rec.subarray(8)), 4);
      stripped++;
    }
    out.push(rec);
    pos += rec.length;
    if (r.end === sb.checkpointLen) checkpointLen = pos;
  }
  expect(stripped).toBeGreaterThan(0);
  await writeFile(jPath, Buffer.concat(out));
  const nsb = encodeSuperblock({ ...sb, seq: sb.seq + 1, checkpointLen });
  const slots = Buffer.alloc(2 * SUPERBLOCK_SLOT);
  nsb.copy(slots, 0);
  nsb.copy(slots, SUPERBLOCK_SLOT);
  await writeFile(sbPath, slots);
}

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

  it('of a snapshot recorded without one (an older store) is derived, the same at every open, then kept', async () => {
    let s = await openCowStore(dir, { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 1024 * 1024 });
    const a = await s.createSnapshot('v', 'a');
    await s.checkpoint();
    const b = await s.createSnapshot('v', 'b'); // in the log after the checkpoint
    await s.close();
    await stripGuids(dir);
    s = await openCowStore(dir, { commitIntervalMs: 0 });
    const first = s.listSnapshots('v').map((x) => x.guid);
    expect(first[0]).toMatch(GUID_PATTERN);
    expect(first).not.toEqual([a.guid, b.guid]);
    expect(first[0]).not.toBe(first[1]);
    await s.close();
    s = await openCowStore(dir, { commitIntervalMs: 0 });
    expect(s.listSnapshots('v').map((x) => x.guid)).toEqual(first);
    await s.checkpoint(); // now written down
    await s.close();
    s = await openCowStore(dir, { commitIntervalMs: 0 });
    expect(s.listSnapshots('v').map((x) => x.guid)).toEqual(first);
    await s.close();
  });

  it('legacy derivation depends on the snapshot\'s records', () => {
    const g = legacyGuid(1700000000000, 'v', 7, 1700000001000, 's1');
    expect(g).toMatch(GUID_PATTERN);
    expect(legacyGuid(1700000000000, 'v', 7, 1700000001000, 's1')).toBe(g);
    expect(legacyGuid(1700000000000, 'v', 8, 1700000001000, 's1')).not.toBe(g);
  });
});
