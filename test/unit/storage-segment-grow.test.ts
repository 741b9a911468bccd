// How a segment file's size is learnt before a write grows it (chunk-store.ts, DataStore.write and
// grow): a file the store has just created is known to be empty, so the writes that meet it at
// once (32 at a queue depth of 32) ask the file system nothing; a file that was there before
// (a reopened store) is asked its size. Either way the data reads back and the store checks clean.
import { describe, expect, it } from 'vitest';
import { checkStore } from '../../src/storage/check.ts';
import type { FileIo, IoFile, OpenMode } from '../../src/storage/file-io.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';

const CHUNK = 64 * 1024;
const BLOCK = 4096;
const SEG_SLOTS = 64;
const VOLUME = 4 * SEG_SLOTS * CHUNK;
/** Writes in flight at once, as a client's queue depth. */
const QD = 32;

/** The simulated file system, counting `size()` calls on segment files. */
class SizeCounting implements FileIo {
  segmentSizeCalls = 0;
  private readonly fs: SimFileIo;
  constructor(fs: SimFileIo) {
    this.fs = fs;
  }
  async open(path: string, mode: OpenMode): Promise<IoFile> {
    const f = await this.fs.open(path, mode);
    if (!/\/seg-[^/]*$/.test(path)) return f;
    return Object.assign(Object.create(f) as IoFile, {
      size: (): Promise<number> => {
        this.segmentSizeCalls++;
        return f.size();
      },
    });
  }
  stat = (p: string) => this.fs.stat(p);
  statSync = (p: string) => this.fs.statSync(p);
  readdir = (d: string) => this.fs.readdir(d);
  mkdirp = (d: string) => this.fs.mkdirp(d);
  unlink = (p: string) => this.fs.unlink(p);
  syncDir = (d: string) => this.fs.syncDir(d);
  freeBytes = (): Promise<number> => this.fs.freeBytes();
  point = (p: Parameters<FileIo['point']>[0]): void => this.fs.point(p);
}

function block(seed: number): Buffer {
  return Buffer.alloc(BLOCK, seed & 0xff);
}

/** QD writes at once, one 4 KiB block in each of chunks first..first+QD (each past the file's end so far). */
async function burst(dev: { write(o: number, b: Buffer, f: { fua: boolean }): Promise<void> }, first: number): Promise<void> {
  await Promise.all(Array.from({ length: QD }, (_, i) => dev.write((first + i) * CHUNK + (i % 16) * BLOCK, block(first + i), { fua: false })));
}

describe('segment file sizes before a write grows the file', () => {
  it('a file just created asks no size; a file there before is asked; the data reads back', async () => {
    const sim = new SimFileIo();
    const io = new SizeCounting(sim);
    const opts = { fileIo: io, commitIntervalMs: 0, segmentBytes: SEG_SLOTS * CHUNK };
    let store = await openCowStore('/s', opts);
    store.autoCompact = false;
    await store.createVolume({ name: 'v', size: VOLUME, chunkSize: CHUNK });
    // No backing file and no snapshot: each 4 KiB write fills a whole fresh chunk (zeros around it).
    await burst(store.head('v'), 0);
    expect(io.segmentSizeCalls, 'size() calls for a segment file the store created').toBe(0);
    await store.flush();
    await store.close();

    store = await openCowStore('/s', opts);
    store.autoCompact = false;
    const before = io.segmentSizeCalls;
    await burst(store.head('v'), QD);
    expect(io.segmentSizeCalls - before, 'a segment file opened again is asked its size').toBeGreaterThan(0);
    const dev = store.head('v');
    for (let c = 0; c < 2 * QD; c++) {
      const got = Buffer.alloc(CHUNK);
      await dev.read(c * CHUNK, CHUNK, got);
      const want = Buffer.alloc(CHUNK);
      block(c).copy(want, (c % QD % 16) * BLOCK);
      expect(got.equals(want), `chunk ${c}`).toBe(true);
    }
    await store.flush();
    await store.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });
});
