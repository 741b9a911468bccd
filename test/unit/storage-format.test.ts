// Superblocks, journal records and the refusal of stores that are not ours, newer or damaged.
import { mkdtemp, readFile, rm, writeFile, readdir, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  decodeSuperblock, encodeSuperblock, FORMAT_VERSION, Rec, RecordWriter, scanRecords, SUPERBLOCK_FILE, SUPERBLOCK_SLOT,
} from '../../src/storage/format.ts';
import { openCowStore, openStore } from '../../src/storage/index.ts';
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

  it('a damaged newest superblock falls back to the older copy; both damaged is refused', async () => {
    await makeStore();
    const path = join(dir, SUPERBLOCK_FILE);
    const copies = (b: Buffer) => [0, 1].map((i) => decodeSuperblock(b.subarray(i * SUPERBLOCK_SLOT, (i + 1) * SUPERBLOCK_SLOT)));
    const newest = (b: Buffer): number => {
      const c = copies(b);
      const seqs = c.map((r) => (r.ok ? r.sb.seq : -1));
      return seqs[0]! > seqs[1]! ? 0 : 1;
    };
    const b0 = await readFile(path);
    const c0 = copies(b0)[newest(b0)]!;
    if (!c0.ok) throw new Error('no valid superblock after create');
    const oldJournal = `journal-${String(c0.sb.journalGen).padStart(8, '0')}.log`;
    const saved = await readFile(join(dir, oldJournal));
    // A checkpoint writes the other slot (seq + 1, a new journal) and deletes the old journal.
    const s0 = await openCowStore(dir, { commitIntervalMs: 0 });
    await s0.checkpoint();
    await s0.close();
    const b1 = await readFile(path);
    const cs = copies(b1);
    expect(cs.every((r) => r.ok), 'both copies valid after the second checkpoint').toBe(true);
    const top = newest(b1);
    const [hi, lo] = [cs[top]!, cs[1 - top]!];
    if (!hi.ok || !lo.ok) throw new Error('a copy is invalid');
    expect(hi.sb.seq).toBeGreaterThan(lo.sb.seq);
    expect(lo.sb.journalGen).toBe(c0.sb.journalGen);
    // The power cut struck while the newest copy was being written: it is torn, and the journal
    // the older copy names was not deleted yet.
    b1[top * SUPERBLOCK_SLOT + 20]! ^= 1;
    await writeFile(path, b1);
    await writeFile(join(dir, oldJournal), saved);
    const s = await openCowStore(dir, { commitIntervalMs: 0 });
    expect(s.inspect().journalGen, 'opened from the older copy').toBe(c0.sb.journalGen);
    const got = Buffer.alloc(4096);
    await s.head('v').read(0, 4096, got);
    expect(got.equals(Buffer.alloc(4096, 9))).toBe(true);
    await s.close();
    const now = await readFile(path);
    for (const i of [0, 1]) now.fill(0x55, i * SUPERBLOCK_SLOT + 16, i * SUPERBLOCK_SLOT + 24);
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
