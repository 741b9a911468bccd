// nbdcopy both ways: a 256 MiB random image in and out, byte for byte; a sparse image whose holes
// must stay holes on the export (nbdinfo --map) and come back as zeros.
import { randomFillSync } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, statSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { PEER_KINDS, withPeers } from '../helpers/peers.ts';
import { tempDir } from '../helpers/server.ts';
import { mustRun, sha256File } from './tool.ts';

const MiB = 2 ** 20;
const IMAGE_SIZE = 256 * MiB;
/** Random data written in pieces this big, to keep memory flat. */
const FILL_PIECE = 16 * MiB;
/** Where the sparse image holds data (offset, length); everything else is a hole. */
const SPARSE_DATA: [number, number][] = [[0, MiB], [10 * MiB, 3 * MiB], [100 * MiB, 64 * 1024], [255 * MiB, MiB]];

let dir: string;
let randomImage: string;
let sparseImage: string;

function writeRandom(path: string): void {
  const fd = openSync(path, 'w');
  const piece = Buffer.alloc(FILL_PIECE);
  for (let off = 0; off < IMAGE_SIZE; off += FILL_PIECE) writeSync(fd, randomFillSync(piece), 0, FILL_PIECE, off);
  closeSync(fd);
}

function writeSparse(path: string): void {
  const fd = openSync(path, 'w');
  ftruncateSync(fd, IMAGE_SIZE);
  for (const [off, len] of SPARSE_DATA) writeSync(fd, randomFillSync(Buffer.alloc(len)), 0, len, off);
  closeSync(fd);
}

interface MapEntry { offset: number; length: number; description: string }

function coalesce(entries: MapEntry[]): MapEntry[] {
  const out: MapEntry[] = [];
  for (const e of entries) {
    const last = out.at(-1);
    if (last && last.description === e.description && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, description: e.description });
  }
  return out;
}

describe('nbdcopy', () => {
  beforeAll(() => {
    dir = tempDir('snapnbd-nbdcopy-');
    randomImage = join(dir, 'random.img');
    sparseImage = join(dir, 'sparse.img');
    writeRandom(randomImage);
    writeSparse(sparseImage);
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(PEER_KINDS)('copies a 256 MiB random image in and out byte for byte (%s)', async (kind) => {
    requires('nbdcopy', 'nbdkit');
    const out = join(dir, `out-${kind}.img`);
    await withPeers([kind], async (uri) => {
      await mustRun('nbdcopy', ['--flush', randomImage, uri]);
      await mustRun('nbdcopy', [uri, out]);
    }, { size: '256M' });
    expect(statSync(out).size).toBe(IMAGE_SIZE);
    expect(await sha256File(out)).toBe(await sha256File(randomImage));
    rmSync(out);
  });

  it.each(PEER_KINDS)('keeps the holes of a sparse image as holes and reads them back as zeros (%s)', async (kind) => {
    requires('nbdcopy', 'nbdinfo', 'nbdkit');
    const out = join(dir, `sparse-out-${kind}.img`);
    await withPeers([kind], async (uri) => {
      await mustRun('nbdcopy', [sparseImage, uri]);
      const map = coalesce(JSON.parse((await mustRun('nbdinfo', ['--map', '--json', uri])).stdout) as MapEntry[]);
      // Every data range of the image is data on the export; the big gaps between are holes.
      // Soft: a wrong map must not hide whether the data came back right.
      for (const [off, len] of SPARSE_DATA) {
        const covering = map.filter((e) => e.offset < off + len && e.offset + e.length > off);
        expect.soft(covering.map((e) => e.description), `range ${off}+${len}`).toEqual(['data']);
      }
      for (const [off, len] of [[2 * MiB, 8 * MiB], [14 * MiB, 80 * MiB], [101 * MiB, 150 * MiB]] as const) {
        const covering = map.filter((e) => e.offset < off + len && e.offset + e.length > off);
        expect.soft(covering.map((e) => e.description), `gap ${off}+${len}`).toEqual(['hole,zero']);
      }
      await mustRun('nbdcopy', [uri, out]);
    }, { size: '256M' });
    expect(readFileSync(out).equals(readFileSync(sparseImage))).toBe(true);
    rmSync(out);
  });
});
