// Export and import against the real engine, in process: full and a chain of incrementals round
// trip byte for byte with the snapshots' identities; an incremental costs what changed; a cut,
// a flipped byte, a wrong base and a written head are refused with nothing applied.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { exportStream, type ExportRequest } from '../../src/backup/stream-export.ts';
import { importStream, type ImportStore } from '../../src/backup/stream-import.ts';
import { PREAMBLE_LEN, RECORD_HEADER_LEN, StreamDecoder, StreamFormatError } from '../../src/backup/stream-format.ts';
import { realFileIo, type FileIo } from '../../src/storage/file-io.ts';
import { openCowStore } from '../../src/storage/index.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { StorageError, type BlockDevice } from '../../src/storage/device.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { Prng } from '../helpers/prng.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 8 * MiB;
let dir: string;
let stores: CowStore[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-stream-'));
  stores = [];
});
afterEach(async () => {
  for (const s of stores) await s.close().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function store(name: string, fileIo?: FileIo): Promise<CowStore> {
  const s = await openCowStore(join(dir, name), fileIo ? { commitIntervalMs: 0, fileIo } : { commitIntervalMs: 0 });
  stores.push(s);
  return s;
}

function fill(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((i * 2654435761 + seed * 97) >>> 0, i);
  return b;
}

async function contents(dev: BlockDevice): Promise<Buffer> {
  const b = Buffer.alloc(dev.size);
  await dev.read(0, dev.size, b);
  return b;
}

async function streamOf(s: CowStore, req: ExportRequest): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const bufs of exportStream(s, req)) parts.push(...bufs);
  return Buffer.concat(parts);
}

async function* pieces(b: Buffer, size = 100_000): AsyncGenerator<Buffer> {
  for (let at = 0; at < b.length; at += size) yield b.subarray(at, at + size);
}

function dataBytesOf(stream: Buffer): number {
  const d = new StreamDecoder();
  const evs = d.push(stream);
  if (evs instanceof StreamFormatError) throw evs;
  const end = evs.find((e) => e.kind === 'end');
  if (!end || end.kind !== 'end') throw new Error('no END');
  return end.totals.dataBytes;
}

/** Source volume 'v' with snapshots s1, s2, s3 (writes, a trim and a zero between them). */
async function source(): Promise<CowStore> {
  const a = await store('a');
  await a.createVolume({ name: 'v', size: SIZE, chunkSize: 64 * KiB });
  const h = a.head('v');
  await h.write(0, fill(MiB, 1), { fua: false });
  await h.write(5 * MiB, fill(300 * KiB, 2), { fua: false });
  await a.createSnapshot('v', 's1', 'first');
  await h.write(64 * KiB, fill(128 * KiB, 3), { fua: false });
  await h.trim(5 * MiB, 128 * KiB, { fua: false });
  await a.createSnapshot('v', 's2');
  await h.write(7 * MiB + 4 * KiB, fill(8 * KiB, 4), { fua: false });
  await h.zero(0, 64 * KiB, { fua: false, noHole: false, fast: false });
  await a.createSnapshot('v', 's3');
  await h.write(0, fill(MiB, 9), { fua: false }); // the head moves on; streams must not see it
  return a;
}

describe('snapshot streams against the engine', () => {
  it('full then a chain of incrementals round-trip byte for byte, keeping identities', async () => {
    const a = await source();
    const b = await store('b');
    const full = await streamOf(a, { volume: 'v', snapshot: 's1', since: null });
    expect(dataBytesOf(full)).toBe(MiB + 320 * KiB); // allocated chunks only (300 KiB rounds up to 5 chunks)
    const r1 = await importStream(b, 'w', pieces(full));
    expect(r1).toMatchObject({ volume: 'w', snapshot: 's1', base: null, created: true, guid: a.snapshotInfo('v', 's1').guid });
    expect(b.snapshotInfo('w', 's1').description).toBe('first');
    expect((await contents(b.snapshotView('w', 's1'))).equals(await contents(a.snapshotView('v', 's1')))).toBe(true);

    const inc2 = await streamOf(a, { volume: 'v', snapshot: 's2', since: 's1' });
    expect(dataBytesOf(inc2)).toBe(128 * KiB); // only the changed chunks; the trim is a HOLE record
    await importStream(b, 'w', pieces(inc2, 7777));
    const inc3 = await streamOf(a, { volume: 'v', snapshot: 's3', since: 's2' });
    await importStream(b, 'w', pieces(inc3));
    for (const s of ['s1', 's2', 's3']) {
      expect((await contents(b.snapshotView('w', s))).equals(await contents(a.snapshotView('v', s))), s).toBe(true);
      expect(b.snapshotInfo('w', s).guid, s).toBe(a.snapshotInfo('v', s).guid);
    }
    expect((await contents(b.head('w'))).equals(await contents(a.snapshotView('v', 's3')))).toBe(true);

    // Survives a restart of the importing store.
    await b.close();
    stores = stores.filter((x) => x !== b);
    const b2 = await store('b');
    expect(b2.listSnapshots('w').map((s) => [s.name, s.guid])).toEqual(a.listSnapshots('v').map((s) => [s.name, s.guid]));
    expect((await contents(b2.snapshotView('w', 's3'))).equals(await contents(a.snapshotView('v', 's3')))).toBe(true);
  });

  it('an export reads the snapshot with maintenance reads (the pool, never the loop)', async () => {
    const io = new HoldFileIo(realFileIo);
    const a = await store('a', io);
    await a.createVolume({ name: 'v', size: SIZE });
    await a.head('v').write(0, fill(MiB, 9), { fua: false });
    await a.createSnapshot('v', 's1');
    const before = io.ioOf('.dat');
    expect(dataBytesOf(await streamOf(a, { volume: 'v', snapshot: 's1', since: null }))).toBe(MiB);
    const during = io.ioOf('.dat');
    expect(during.reads - before.reads).toBeGreaterThan(0);
    expect(during.backgroundReads - before.backgroundReads).toBe(during.reads - before.reads);
  });

  it('refuses a cut or corrupted stream, leaving nothing applied', async () => {
    const a = await source();
    const b = await store('b');
    const full = await streamOf(a, { volume: 'v', snapshot: 's1', since: null });
    // Full stream cut short / flipped in a DATA record / flipped in the BEGIN header: no volume.
    const flippedHeader = Buffer.from(full);
    flippedHeader.writeUInt8(flippedHeader.readUInt8(PREAMBLE_LEN + RECORD_HEADER_LEN + 3) ^ 1, PREAMBLE_LEN + RECORD_HEADER_LEN + 3);
    const flippedData = Buffer.from(full);
    flippedData.writeUInt8(flippedData.readUInt8(full.length - 1000) ^ 0x40, full.length - 1000);
    for (const bad of [full.subarray(0, full.length - 1), full.subarray(0, full.length / 2), flippedHeader, flippedData]) {
      await expect(importStream(b, 'w', pieces(bad))).rejects.toBeInstanceOf(StreamFormatError);
      expect(b.listVolumes()).toEqual([]);
    }

    await importStream(b, 'w', pieces(full));
    const before = await contents(b.head('w'));
    const inc = await streamOf(a, { volume: 'v', snapshot: 's2', since: 's1' });
    const incFlip = Buffer.from(inc);
    incFlip.writeUInt8(incFlip.readUInt8(inc.length - 5000) ^ 0x01, inc.length - 5000);
    for (const bad of [inc.subarray(0, inc.length - 60), incFlip]) {
      await expect(importStream(b, 'w', pieces(bad, 4096))).rejects.toBeInstanceOf(StreamFormatError);
      expect(b.listSnapshots('w').map((s) => s.name)).toEqual(['s1']);
      expect((await contents(b.head('w'))).equals(before)).toBe(true);
    }
    // The good one still applies afterwards.
    await importStream(b, 'w', pieces(inc));
    expect((await contents(b.snapshotView('w', 's2'))).equals(await contents(a.snapshotView('v', 's2')))).toBe(true);
  });

  it('refuses an incremental onto a base of the same name but another identity, and onto a written head', async () => {
    const a = await source();
    const other = await store('o');
    await other.createVolume({ name: 'v', size: SIZE, chunkSize: 64 * KiB });
    await other.head('v').write(0, fill(MiB, 1), { fua: false });
    await other.createSnapshot('v', 's1', 'first'); // same name, same bytes, another identity
    const b = await store('b');
    await importStream(b, 'w', pieces(await streamOf(other, { volume: 'v', snapshot: 's1', since: null })));
    const before = await contents(b.head('w'));
    const inc = await streamOf(a, { volume: 'v', snapshot: 's2', since: 's1' });
    await expect(importStream(b, 'w', pieces(inc))).rejects.toMatchObject({ code: 'WRONG_BASE' });
    expect(b.listSnapshots('w').map((s) => s.name)).toEqual(['s1']);
    expect((await contents(b.head('w'))).equals(before)).toBe(true);

    const c = await store('c');
    await importStream(c, 'w', pieces(await streamOf(a, { volume: 'v', snapshot: 's1', since: null })));
    await c.head('w').write(3 * MiB, Buffer.alloc(4096, 7), { fua: false });
    await expect(importStream(c, 'w', pieces(inc))).rejects.toMatchObject({ code: 'HEAD_CHANGED' });
    expect(c.listSnapshots('w').map((s) => s.name)).toEqual(['s1']);
    // A full stream onto an existing volume is refused too.
    await expect(importStream(c, 'w', pieces(await streamOf(a, { volume: 'v', snapshot: 's1', since: null })))).rejects.toMatchObject({ code: 'NAME_TAKEN' });
  });

  it('refuses randomly damaged incrementals (flips, cuts, inserted bytes) with nothing applied (seeded)', async () => {
    const seed = Number(process.env.SNAPNBD_SEED ?? Date.now() % 1e9);
    const rnd = new Prng(seed);
    const a = await source();
    const b = await store('b');
    await importStream(b, 'w', pieces(await streamOf(a, { volume: 'v', snapshot: 's1', since: null })));
    const before = await contents(b.head('w'));
    const inc = await streamOf(a, { volume: 'v', snapshot: 's2', since: 's1' });
    for (let round = 0; round < 40; round++) {
      let bad: Buffer;
      const at = rnd.int(0, inc.length - 1);
      switch (round % 3) {
        case 0:
          bad = Buffer.from(inc);
          bad.writeUInt8(bad.readUInt8(at) ^ (1 << rnd.int(0, 7)), at);
          break;
        case 1:
          bad = inc.subarray(0, at);
          break;
        default:
          bad = Buffer.concat([inc.subarray(0, at), Buffer.from([rnd.int(0, 255)]), inc.subarray(at)]);
      }
      const why = `seed ${seed} round ${round} at ${at}`;
      await expect(importStream(b, 'w', pieces(bad, rnd.int(1, 70_000))), why).rejects.toBeInstanceOf(StreamFormatError);
      expect(b.listSnapshots('w').map((x) => x.name), why).toEqual(['s1']);
    }
    expect((await contents(b.head('w'))).equals(before)).toBe(true);
  });

  it('rolls back when a write fails part-way (full: no volume; incremental: the base again)', async () => {
    const a = await source();
    const b = await store('b');
    /** The store, with the head's 2nd write from now on failing (EIO). */
    const failing = (s: CowStore): ImportStore => {
      let writes = 0;
      return {
        volumeInfo: (n) => s.volumeInfo(n), listSnapshots: (n) => s.listSnapshots(n), createVolume: (v) => s.createVolume(v),
        deleteVolume: (n) => s.deleteVolume(n), diff: (...x) => s.diff(...x), rollback: (v, n) => s.rollback(v, n),
        createSnapshot: (...x) => s.createSnapshot(...x), flush: () => s.flush(),
        head: (n) => {
          const h = s.head(n);
          return Object.assign(Object.create(h) as BlockDevice, {
            write: async (off: number, data: Buffer, o: { fua: boolean }) => {
              if (++writes === 2) throw new StorageError('EIO', 'injected write failure');
              return h.write(off, data, o);
            },
          });
        },
      };
    };
    const full = await streamOf(a, { volume: 'v', snapshot: 's1', since: null });
    await expect(importStream(failing(b), 'w', pieces(full))).rejects.toThrow(/injected/);
    expect(b.listVolumes()).toEqual([]);
    await importStream(b, 'w', pieces(full));
    const before = await contents(b.head('w'));
    await a.head('v').write(2 * MiB, fill(4 * MiB, 8), { fua: false }); // several DATA records
    await a.createSnapshot('v', 's4');
    const inc = await streamOf(a, { volume: 'v', snapshot: 's4', since: 's1' });
    await expect(importStream(failing(b), 'w', pieces(inc))).rejects.toThrow(/injected/);
    expect(b.listSnapshots('w').map((x) => x.name)).toEqual(['s1']);
    expect((await contents(b.head('w'))).equals(before)).toBe(true);
  });

  it('a full stream of a volume over a backing file carries the backing\'s bytes', async () => {
    const img = join(dir, 'base.img');
    await writeFile(img, fill(2 * MiB, 5));
    const a = await store('a');
    await a.createVolume({ name: 'v', backing: img, chunkSize: 64 * KiB });
    await a.head('v').write(MiB, fill(64 * KiB, 6), { fua: false });
    await a.createSnapshot('v', 's1');
    const b = await store('b');
    const full = await streamOf(a, { volume: 'v', snapshot: 's1', since: null });
    expect(dataBytesOf(full)).toBe(2 * MiB);
    await importStream(b, 'w', pieces(full));
    expect(b.volumeInfo('w').backing).toBeNull();
    expect((await contents(b.snapshotView('w', 's1'))).equals(await contents(a.snapshotView('v', 's1')))).toBe(true);
  });

  it('refuses --since a snapshot that is not older', async () => {
    const a = await source();
    await expect(streamOf(a, { volume: 'v', snapshot: 's1', since: 's2' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(streamOf(a, { volume: 'v', snapshot: 's1', since: 'nope' })).rejects.toMatchObject({ code: 'SNAPSHOT_NOT_FOUND' });
  });
});
