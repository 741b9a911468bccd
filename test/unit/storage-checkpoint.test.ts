// The checkpoint written and the journal read in bounded pieces (record-pieces.ts,
// checkpoint.ts): the bytes are those of the records back to back whatever the piece size, the
// reader finds the same records and stops at the same damaged one as the one-buffer scanner,
// a checkpoint is the state at its swap even when the maps change while it is being written
// (writes, trims, resizes, the compactor's switch),
// and a damaged byte in a middle piece refuses the store as before.
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CrashPoint, realFileIo, type IoFile } from '../../src/storage/file-io.ts';
import { JOURNAL_HEADER_LEN, journalFile, Rec, RECORD_HEADER_LEN, RecordWriter, scanRecords } from '../../src/storage/format.ts';
import { openCowStore, type CowStore } from '../../src/storage/index.ts';
import { scanFileRecords, writeInPieces, type FileRecord } from '../../src/storage/record-pieces.ts';
import { prng, SimFileIo } from '../../src/storage/sim-file-io.ts';
import { StoreError } from '../../src/storage/types.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { countLoopTurns, EverySlice } from '../helpers/loop-turns.ts';
import { buildSparseStore, verifyNodes } from '../property/storage-model.ts';
import type { L1, Page } from '../../src/storage/block-map.ts';
import type { Catalog } from '../../src/storage/catalog.ts';
import { CheckpointPlan } from '../../src/storage/checkpoint.ts';
import type { DataStore } from '../../src/storage/chunk-store.ts';

/** A file in memory whose reads return at most `maxRead` bytes (short reads, as a pipe might). */
class MemFile implements IoFile {
  data = Buffer.alloc(0);
  private room = Buffer.alloc(0);
  writes = 0;
  private readonly maxRead: number;
  constructor(maxRead = Infinity) {
    this.maxRead = maxRead;
  }
  async read(buf: Buffer, off: number, len: number, pos: number): Promise<number> {
    const n = Math.max(0, Math.min(len, this.maxRead, this.data.length - pos));
    this.data.copy(buf, off, pos, pos + n);
    return n;
  }
  async write(buf: Buffer, off: number, len: number, pos: number): Promise<void> {
    this.writes++;
    if (pos + len > this.data.length) {
      // Grown by doubling (the 1-byte pieces below would copy quadratically otherwise).
      if (pos + len > this.room.length) {
        const d = Buffer.alloc(Math.max(pos + len, this.room.length * 2));
        this.data.copy(d);
        this.room = d;
      }
      this.data = this.room.subarray(0, pos + len);
    }
    buf.copy(this.data, pos, off, off + len);
  }
  async writev(pieces: readonly Buffer[], pos: number): Promise<void> {
    for (const b of pieces) {
      await this.write(b, 0, b.length, pos);
      pos += b.length;
    }
  }
  async datasync(): Promise<void> {}
  async truncate(len: number): Promise<void> {
    this.data = this.data.subarray(0, len);
  }
  async size(): Promise<number> {
    return this.data.length;
  }
  async close(): Promise<void> {}
}

const NOFUA = { fua: false };

/** Records of random sizes (0 B to 9 KiB of payload, one of 40 KiB) with random content. */
function someRecords(seed: number): Buffer[] {
  const rand = prng(seed);
  const out: Buffer[] = [];
  for (let i = 0; i < 60; i++) {
    const n = i === 30 ? 10_000 : Math.floor(rand() * rand() * 2300);
    const a = new Uint32Array(n);
    for (let k = 0; k < n; k++) a[k] = Math.floor(rand() * 0xffffffff);
    out.push(new RecordWriter(i % 2 ? Rec.MapRun : Rec.Page, n * 4).u32s(a, 0, n).finish());
  }
  return out;
}

type Seen = { at: number; end: number; type: number; payload: string };

async function scanInPieces(f: IoFile, from: number, limit: number, piece: number): Promise<{ seen: Seen[]; end: number }> {
  const seen: Seen[] = [];
  const end = await scanFileRecords(f, from, limit, piece, (r: FileRecord) => {
    seen.push({ at: r.at, end: r.end, type: r.rec.type, payload: r.rec.bytes(r.rec.remaining).toString('hex') });
    return true;
  });
  return { seen, end };
}

function scanWhole(b: Buffer, from: number): { seen: Seen[]; end: number } {
  const seen: Seen[] = [];
  let end = from;
  for (const r of scanRecords(b, from)) {
    seen.push({ at: r.at, end: r.end, type: r.rec.type, payload: r.rec.bytes(r.rec.remaining).toString('hex') });
    end = r.end;
  }
  return { seen, end };
}

describe('records in pieces', () => {
  const records = someRecords(7);
  const whole = Buffer.concat(records);
  const AT = 32;

  it('are written as the records back to back at increasing offsets, whatever the piece size', async () => {
    for (const piece of [1, 7, 100, 4096, 65536, 1 << 20]) {
      const f = new MemFile();
      let cuts = 0;
      const end = await writeInPieces(records, Buffer.alloc(piece), AT, (b, n, pos) => f.write(b, 0, n, pos), () => cuts++);
      expect(end, `piece ${piece}`).toBe(AT + whole.length);
      expect(f.data.subarray(AT).equals(whole), `piece ${piece}: bytes`).toBe(true);
      expect(f.writes, `piece ${piece}: writes`).toBe(Math.ceil(whole.length / piece));
      expect(cuts, `piece ${piece}: full pieces`).toBe(Math.floor(whole.length / piece));
    }
  });

  it('yield the event loop between records once a slice is used up, within one piece too, the bytes unchanged', async () => {
    // A slice always used up: every record is encoded in a turn of its own.
    const f = new MemFile();
    const slicer = new EverySlice();
    const turns = countLoopTurns();
    const end = await writeInPieces(records, Buffer.alloc(1 << 20), AT, (b, n, pos) => f.write(b, 0, n, pos), () => undefined, slicer);
    expect(turns.stop()).toBeGreaterThanOrEqual(records.length - 1);
    expect(slicer.yields).toBe(records.length);
    expect(f.writes, 'one piece').toBe(1);
    expect(end).toBe(AT + whole.length);
    expect(f.data.subarray(AT).equals(whole)).toBe(true);
  });

  it('are read back as the one-buffer scan reads them, records cut by a piece included', async () => {
    const f = new MemFile(5000);
    f.data = Buffer.concat([Buffer.alloc(AT, 0xee), whole]);
    const want = scanWhole(f.data, AT);
    expect(want.seen.length).toBe(records.length);
    for (const piece of [1, 13, 4096, 9000, 1 << 20]) {
      const got = await scanInPieces(f, AT, f.data.length, piece);
      expect(got.end, `piece ${piece}`).toBe(f.data.length);
      expect(got.seen, `piece ${piece}`).toEqual(want.seen);
    }
  });

  it('stop where the one-buffer scan stops: a damaged record, a cut tail, the limit', async () => {
    const rand = prng(11);
    for (let k = 0; k < 40; k++) {
      const b = Buffer.concat([Buffer.alloc(AT), whole]);
      const at = AT + Math.floor(rand() * whole.length);
      if (k % 2) b[at]! ^= 1 << Math.floor(rand() * 8);
      const len = k % 4 === 3 ? AT + Math.floor(rand() * whole.length) : b.length;
      const f = new MemFile();
      f.data = b.subarray(0, len);
      const want = scanWhole(f.data, AT);
      for (const piece of [3, 4096, 1 << 20]) {
        const got = await scanInPieces(f, AT, f.data.length, piece);
        expect(got.end, `case ${k}, piece ${piece}`).toBe(want.end);
        expect(got.seen.length, `case ${k}, piece ${piece}`).toBe(want.seen.length);
      }
    }
    // A limit inside the file: nothing past it is looked at.
    const f = new MemFile();
    f.data = Buffer.concat([Buffer.alloc(AT), whole]);
    const limit = AT + records[0]!.length + records[1]!.length + RECORD_HEADER_LEN;
    const got = await scanInPieces(f, AT, limit, 64);
    expect(got.seen.length).toBe(2);
    expect(got.end).toBe(AT + records[0]!.length + records[1]!.length);
  });
});

/**
 * Starts a checkpoint of `s` and holds it at its second piece: its first records are written,
 * the rest not yet encoded. `release` lets it go on; `done` is the checkpoint.
 */
async function checkpointHeldMidway(s: CowStore, io: HoldFileIo): Promise<{ done: Promise<void>; release: () => void }> {
  const name = journalFile(s.inspect().journalGen + 1);
  const first = io.hold(name, 'write');
  const done = s.checkpoint();
  await first.reached;
  const second = io.hold(name, 'write');
  first.release();
  await second.reached;
  return { done, release: () => second.release() };
}

describe('a store checkpointed in tiny pieces', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapnbd-ckpt-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const PIECE = 333; // not a divisor of any record length: pieces cut records everywhere

  /** Two volumes, snapshots sharing pages, copied pages, a partial slot, trims. */
  async function build(pieceBytes: number): Promise<void> {
    const s = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes });
    s.autoCompact = false;
    await s.createVolume({ name: 'a', size: 8 << 20, chunkSize: 4096 });
    await s.createVolume({ name: 'b', size: 4 << 20, chunkSize: 65536 });
    const a = s.head('a');
    const b = s.head('b');
    for (let i = 0; i < 64; i++) await a.write(i * 131072, Buffer.alloc(4096, i + 1), NOFUA);
    await b.write(0, Buffer.alloc(1 << 20, 7), NOFUA);
    await s.createSnapshot('a', 's1');
    await s.createSnapshot('b', 'b1');
    for (let i = 0; i < 16; i++) await a.write(i * 262144 + 4096, Buffer.alloc(4096, 200 + i), NOFUA);
    await b.write(65536 * 3, Buffer.alloc(4096, 9), NOFUA); // a partial slot over the snapshot's chunk
    await s.createSnapshot('a', 's2');
    await a.trim(0, 2 << 20, NOFUA);
    await s.head('a').flush();
    await s.close();
  }

  async function journalOf(): Promise<Buffer> {
    const name = (await readdir(dir)).find((n) => /^journal-\d+\.log$/.test(n))!;
    return readFile(join(dir, name));
  }

  /** The checkpoint's records without the header (generation) and the Commit (sequence). */
  function checkpointBody(j: Buffer, cpLen: number): Buffer {
    const recs = [...scanRecords(j.subarray(0, cpLen), JOURNAL_HEADER_LEN)];
    const commit = recs[recs.length - 1]!;
    expect(commit.rec.type).toBe(Rec.Commit);
    return j.subarray(JOURNAL_HEADER_LEN, commit.at);
  }

  it('writes the bytes one piece would, and reopens in tiny pieces to the same state', async () => {
    await build(PIECE);
    const s1 = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes: 1 << 30 });
    await s1.checkpoint();
    const big = checkpointBody(await journalOf(), s1.inspect().checkpointLen);
    await s1.close();
    const s2 = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes: PIECE });
    expect(s2.inspect().checkpointLen).toBeGreaterThan(20 * PIECE);
    await s2.checkpoint();
    const small = checkpointBody(await journalOf(), s2.inspect().checkpointLen);
    expect(small.equals(big)).toBe(true);
    const got = Buffer.alloc(4096);
    await s2.head('a').read(12 * 262144 + 4096, 4096, got);
    expect(got.equals(Buffer.alloc(4096, 212))).toBe(true);
    await s2.snapshotView('b', 'b1').read(65536 * 3, 4096, got);
    expect(got.equals(Buffer.alloc(4096, 7))).toBe(true);
    await s2.head('b').read(65536 * 3, 4096, got);
    expect(got.equals(Buffer.alloc(4096, 9))).toBe(true);
    await s2.close();
  });

  it('is the state at its swap although pages and L1s change while it is written', async () => {
    await build(PIECE);
    const io = new HoldFileIo(realFileIo);
    const s = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes: PIECE, fileIo: io });
    s.autoCompact = false;
    const a = s.head('a');
    // The head's own copies of these pages (after s2 they were shared): written in place below.
    for (let i = 0; i < 32; i++) await a.write(i * 131072 + 8192, Buffer.alloc(4096, 77), NOFUA);
    await s.checkpoint();
    const before = checkpointBody(await journalOf(), s.inspect().checkpointLen);
    const { done: cp, release } = await checkpointHeldMidway(s, io);
    // An L1 grown and cut in place; writes in place into frozen pages; a new page and a dropped
    // one (the L1 changes again); pages copied in another volume.
    const head = s.inspect().volume('a')!.head;
    head.map.resize(head.map.nChunks + 4096);
    head.map.resize(head.map.nChunks - 4096);
    for (let i = 0; i < 32; i++) await a.write(i * 131072 + 8192, Buffer.alloc(4096, 78), NOFUA);
    await a.write(0, Buffer.alloc(4096, 79), NOFUA);
    await a.trim(4 << 20, 2 << 20, NOFUA);
    await s.head('b').write(65536 * 5, Buffer.alloc(65536, 80), NOFUA);
    // A block more of the partial slot (its bits grow in place), and a slot over it after a snapshot.
    await s.head('b').write(65536 * 3 + 8192, Buffer.alloc(4096, 81), NOFUA);
    release();
    await cp;
    const during = checkpointBody(await journalOf(), s.inspect().checkpointLen);
    expect(during.equals(before)).toBe(true);
    // And the next one has the changes.
    await s.checkpoint();
    expect(checkpointBody(await journalOf(), s.inspect().checkpointLen).equals(before)).toBe(false);
    await s.close();
  });

  it('is the state at its swap for a page reached through an L1 copied after the swap, its original dropped', async () => {
    await build(PIECE);
    const io = new HoldFileIo(realFileIo);
    const s = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes: PIECE, fileIo: io });
    s.autoCompact = false;
    // Two pages of 512 chunks, both mapped; the head and c1 share one L1.
    await s.createVolume({ name: 'c', size: 4 << 20, chunkSize: 4096 });
    const c = s.head('c');
    await c.write(0, Buffer.alloc(4096, 83), NOFUA);
    await c.write(2 << 20, Buffer.alloc(4096, 84), NOFUA);
    await s.createSnapshot('c', 'c1');
    await s.checkpoint();
    const before = checkpointBody(await journalOf(), s.inspect().checkpointLen);
    const { done: cp, release } = await checkpointHeldMidway(s, io);
    // The head copies the shared L1 (page 1 copied, page 0 shared by both L1s); dropping c1
    // leaves page 0 held by the head's copy alone, which then writes into it in place: only the
    // copy's link to the checkpoint (block-map.ts `L1.freeze`) says the page must be kept.
    await c.write((2 << 20) + 8192, Buffer.alloc(4096, 85), NOFUA);
    const head = s.inspect().volume('c')!.head;
    const page0 = head.map.l1.pages[0]!;
    expect(page0.refs).toBe(2);
    const deleted = s.deleteSnapshot('c', 'c1');
    for (let i = 0; i < 1000 && page0.refs > 1; i++) await new Promise((r) => setTimeout(r, 1));
    expect(page0.refs).toBe(1);
    await c.write(8192, Buffer.alloc(4096, 86), NOFUA);
    expect(head.map.l1.pages[0]).toBe(page0); // written in place
    release();
    await cp;
    await deleted;
    const during = checkpointBody(await journalOf(), s.inspect().checkpointLen);
    expect(during.equals(before)).toBe(true);
    await s.close();
  });

  it('freezes at its swap and ends without reading any page of any L1 (O(nodes), not O(pages))', async () => {
    await build(PIECE);
    const s = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes: PIECE });
    s.autoCompact = false;
    const st = s.inspect();
    const nodes = [...st.nodes];
    const l1s = new Map<L1, (Page | null)[]>();
    for (const n of nodes) l1s.set(n.map.l1, n.map.l1.pages);
    expect(l1s.size).toBeGreaterThan(2);
    let reads = 0;
    for (const [l1, pages] of l1s) Object.defineProperty(l1, 'pages', { configurable: true, get: () => { reads++; return pages; } });
    try {
      const catalog = { epoch: 1, nextId: 1, volumes: () => st.volumes, allNodes: () => nodes } as unknown as Catalog;
      const plan = new CheckpointPlan(catalog, { classes: new Map() } as unknown as DataStore);
      plan.release();
    } finally {
      for (const [l1, pages] of l1s) Object.defineProperty(l1, 'pages', { value: pages, writable: false });
    }
    expect(reads).toBe(0);
    await s.close();
  });

  it('a damaged byte in a middle piece refuses the store, as a damaged checkpoint always did', async () => {
    await build(PIECE);
    const s = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes: PIECE });
    await s.checkpoint();
    const cpLen = s.inspect().checkpointLen;
    await s.close();
    const name = (await readdir(dir)).find((n) => /^journal-\d+\.log$/.test(n))!;
    const j = await readFile(join(dir, name));
    const at = Math.floor(cpLen / PIECE / 2) * PIECE + 100;
    j[at]! ^= 0x10;
    await writeFile(join(dir, name), j);
    const err = await openCowStore(dir, { commitIntervalMs: 0, pieceBytes: PIECE }).then((o) => o.close(), (e: unknown) => e);
    expect(err).toBeInstanceOf(StoreError);
    expect((err as StoreError).code).toBe('STORE_CORRUPT');
    expect((err as StoreError).message).toContain(name);
    expect((err as StoreError).message).toMatch(/checkpoint damaged/);
    expect((await readFile(join(dir, name))).equals(j), 'the journal is untouched').toBe(true);
  });

  it('is the state at its swap although the compactor rewrites pages in place meanwhile', async () => {
    const sim = new SimFileIo();
    const io = new HoldFileIo(sim);
    const open = () => openCowStore('/store', { fileIo: io, commitIntervalMs: 0, segmentBytes: 16 * 4096, pieceBytes: PIECE });
    const s = await open();
    s.autoCompact = false;
    const nodes = await buildSparseStore(s, 4096, 256);
    const cpBody = (): Buffer => {
      const j = sim.files.get(`/store/${journalFile(s.inspect().journalGen)}`)!.cur;
      return checkpointBody(j, s.inspect().checkpointLen);
    };
    await s.checkpoint();
    const before = cpBody();
    const { done: cp, release } = await checkpointHeldMidway(s, io);
    // The pass copies, switches (rewrites shared pages in place), then waits for our commit.
    sim.hits.clear();
    const compacted = s.compact();
    while (!sim.hits.get(CrashPoint.CompactCopied)) await new Promise((r) => setTimeout(r, 1));
    await new Promise((r) => setTimeout(r, 5));
    release();
    await cp;
    expect(cpBody().equals(before), 'the checkpoint written during the switch').toBe(true);
    expect((await compacted).segments).toBeGreaterThan(0);
    expect(cpBody().equals(before), 'the compaction\'s own checkpoint').toBe(false);
    await s.close();
    const r = await open();
    await verifyNodes(r, nodes, 'reopened after the compaction');
    await r.close();
  });
});
