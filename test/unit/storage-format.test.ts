// Superblocks, journal records and the refusal of stores that are not ours, newer or damaged.
import { mkdtemp, readFile, rm, writeFile, readdir, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  decodeSuperblock, encodeSuperblock, FORMAT_VERSION, Rec, RecordWriter, scanRecords, SUPERBLOCK_FILE, SUPERBLOCK_SLOT,
} from '../../src/storage/format.ts';
import { openStore } from '../../src/storage/index.ts';
import { StoreError } from '../../src/storage/types.ts';

describe('superblock', () => {
  it('round-trips and rejects a flipped bit', () => {
    const b = encodeSuperblock({ version: FORMAT_VERSION, seq: 7, journalGen: 3, checkpointLen: 1234, segmentBytes: 1 << 26 });
    const r = decodeSuperblock(b);
    expect(r).toEqual({ ok: true, sb: { version: FORMAT_VERSION, seq: 7, journalGen: 3, checkpointLen: 1234, segmentBytes: 1 << 26 } });
    b[20]! ^= 1;
    expect(decodeSuperblock(b)).toEqual({ ok: false, why: 'checksum' });
  });
});

describe('records', () => {
  it('scan stops at a torn or corrupted record', () => {
    const a = new RecordWriter(Rec.State).u32(5).finish();
    const c = new RecordWriter(Rec.NodeDelete).u32(9).finish();
    const buf = Buffer.concat([a, c]);
    expect([...scanRecords(buf, 0)].map((r) => r.rec.type)).toEqual([Rec.State, Rec.NodeDelete]);
    expect([...scanRecords(buf.subarray(0, buf.length - 1), 0)].length).toBe(1);
    const bad = Buffer.from(buf);
    bad[bad.length - 1]! ^= 0xff;
    expect([...scanRecords(bad, 0)].length).toBe(1);
  });
});

describe('opening damaged or foreign stores', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapnbd-fmt-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function makeStore(): Promise<void> {
    const s = await openStore(dir, { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 1 << 20, chunkSize: 4096 });
    await s.head('v').write(0, Buffer.alloc(4096, 9), { fua: true });
    await s.close();
  }

  async function refused(file: string, re: RegExp): Promise<void> {
    const before = new Map<string, Buffer>();
    for (const n of await readdir(dir)) before.set(n, await readFile(join(dir, n)));
    const err = await openStore(dir, { commitIntervalMs: 0 }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_CORRUPT');
    expect((err as StoreError).message).toContain(file);
    expect((err as StoreError).message).toMatch(re);
    for (const [n, b] of before) expect((await readFile(join(dir, n))).equals(b), `${n} untouched`).toBe(true);
  }

  it('a foreign superblock file is refused', async () => {
    await writeFile(join(dir, SUPERBLOCK_FILE), Buffer.from('QFI\xfb definitely not ours'.padEnd(8192, 'x')));
    await refused(SUPERBLOCK_FILE, /not a snapnbd store/);
  });

  it('a newer format version is refused', async () => {
    await makeStore();
    const b = await readFile(join(dir, SUPERBLOCK_FILE));
    for (const slot of [0, 1]) {
      const sb = encodeSuperblock({ version: FORMAT_VERSION + 1, seq: 99, journalGen: 1, checkpointLen: 10, segmentBytes: 1 << 26 });
      sb.copy(b, slot * SUPERBLOCK_SLOT);
    }
    await writeFile(join(dir, SUPERBLOCK_FILE), b);
    await refused(SUPERBLOCK_FILE, /newer/);
  });

  it('one damaged superblock copy falls back to the other; both damaged is refused', async () => {
    await makeStore();
    const path = join(dir, SUPERBLOCK_FILE);
    const b = await readFile(path);
    const valid = [0, 1].filter((i) => decodeSuperblock(b.subarray(i * SUPERBLOCK_SLOT, (i + 1) * SUPERBLOCK_SLOT)).ok);
    expect(valid.length).toBeGreaterThan(0);
    // Damage a copy that is all zeros or garbage beside a valid one: the store still opens.
    const damaged = Buffer.alloc(SUPERBLOCK_SLOT * 2);
    b.copy(damaged);
    const spare = valid.includes(0) && valid.includes(1) ? null : 1 - valid[0]!;
    if (spare !== null) damaged.fill(0x55, spare * SUPERBLOCK_SLOT, spare * SUPERBLOCK_SLOT + 64);
    await writeFile(path, damaged);
    const s = await openStore(dir, { commitIntervalMs: 0 });
    const got = Buffer.alloc(4096);
    await s.head('v').read(0, 4096, got);
    expect(got.equals(Buffer.alloc(4096, 9))).toBe(true);
    await s.close();
    const now = await readFile(path);
    for (const i of [0, 1]) now[i * SUPERBLOCK_SLOT + 20]! ^= 1;
    await writeFile(path, now);
    await refused(SUPERBLOCK_FILE, /no valid superblock|not a snapnbd store/);
  });

  it('a truncated checkpoint is refused naming the journal file', async () => {
    await makeStore();
    const j = (await readdir(dir)).find((n) => n.startsWith('journal-'))!;
    await truncate(join(dir, j), 40);
    await refused(j, /truncated|checkpoint/);
  });

  it('store files without a superblock are refused, not overwritten', async () => {
    await makeStore();
    await rm(join(dir, SUPERBLOCK_FILE));
    await refused(SUPERBLOCK_FILE, /superblock file missing/);
  });
});
