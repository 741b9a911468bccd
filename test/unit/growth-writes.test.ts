// Large writes past a segment file's end reach the file in 256 KiB pieces (src/storage/growth-writes.ts):
// the pieces a fresh 1 MiB write becomes, the one pwritev of an overwrite in place, and the bytes.
import { describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import type { FileIo, IoFile } from '../../src/storage/file-io.ts';
import { GROWTH_WRITE_PIECE_BYTES, writeGrowing } from '../../src/storage/growth-writes.ts';
import type { Gather } from '../../src/util/gather.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

interface Call { path: string; pos: number; len: number }

/** The file system `inner`, recording every data write (write or writev) to a segment file. */
function recording(inner: FileIo, calls: Call[]): FileIo {
  const file = (f: IoFile, path: string): IoFile => new Proxy(f, {
    get(t, k) {
      if (k === 'write') return (b: Buffer, off: number, len: number, pos: number) => { calls.push({ path, pos, len }); return t.write(b, off, len, pos); };
      if (k === 'writev') {
        return (pieces: Gather, pos: number) => {
          calls.push({ path, pos, len: pieces.reduce((n, p) => n + p.length, 0) });
          return t.writev(pieces, pos);
        };
      }
      const v = Reflect.get(t, k) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
  return new Proxy(inner, {
    get(t, k) {
      if (k === 'open') return async (path: string, mode: Parameters<FileIo['open']>[1]) => file(await t.open(path, mode), path);
      const v = Reflect.get(t, k) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
    },
  });
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
}

const segmentCalls = (calls: Call[]): Call[] => calls.filter((c) => /seg-\d\d-\d{6}\.dat$/.test(c.path));

describe('writeGrowing', () => {
  it('cuts a growing write at multiples of the piece size in the file, one pwritev per piece, in order', async () => {
    const calls: { pos: number; bytes: Buffer }[] = [];
    const f = { writev: async (pieces: Gather, pos: number) => { calls.push({ pos, bytes: Buffer.concat(pieces) }); } } as unknown as IoFile;
    const data = pattern(MiB, 3);
    const pieces = [data.subarray(0, 100 * KiB), data.subarray(100 * KiB)];
    await writeGrowing(f, pieces, MiB, 64 * KiB, true);
    expect(calls.map((c) => [c.pos, c.bytes.length])).toEqual([
      [64 * KiB, 192 * KiB], [256 * KiB, 256 * KiB], [512 * KiB, 256 * KiB], [768 * KiB, 256 * KiB], [MiB, 64 * KiB],
    ]);
    expect(Buffer.concat(calls.map((c) => c.bytes)).equals(data)).toBe(true);
    calls.length = 0;
    await writeGrowing(f, pieces, MiB, 64 * KiB, false);
    expect(calls.map((c) => [c.pos, c.bytes.length])).toEqual([[64 * KiB, MiB]]);
  });
});

describe('the store: large writes past a segment file end in pieces', () => {
  it('writes a fresh 1 MiB in 256 KiB pieces, the same MiB in place as one pwritev, and reads back every byte', async () => {
    const calls: Call[] = [];
    const s = await openCowStore('/s', { fileIo: recording(new SimFileIo(), calls), commitIntervalMs: 0, segmentBytes: 4 * MiB });
    try {
      await s.createVolume({ name: 'v', size: 16 * MiB, chunkSize: 64 * KiB });
      const dev = s.head('v');
      // A Buffer write (DataStore.write) and a gathered one (writeGather), both into fresh chunks.
      const a = pattern(MiB, 1);
      const b = pattern(MiB, 2);
      await dev.write(0, a, { fua: false });
      const fresh = segmentCalls(calls).splice(0);
      calls.length = 0;
      await dev.writeGather!(MiB, [b.subarray(0, 300 * KiB), b.subarray(300 * KiB)], MiB, { fua: false });
      const freshGathered = segmentCalls(calls).splice(0);
      for (const got of [fresh, freshGathered]) {
        expect(got.length).toBe(MiB / GROWTH_WRITE_PIECE_BYTES);
        expect(got.every((c) => c.len === GROWTH_WRITE_PIECE_BYTES)).toBe(true);
        for (let i = 1; i < got.length; i++) expect(got[i]!.pos).toBe(got[i - 1]!.pos + got[i - 1]!.len);
      }
      // The same MiB again: in place, below the file's end, one pwritev.
      calls.length = 0;
      const c = pattern(MiB, 3);
      await dev.writeGather!(0, [c.subarray(0, 64 * KiB), c.subarray(64 * KiB)], MiB, { fua: false });
      expect(segmentCalls(calls).map((x) => [x.pos, x.len])).toEqual([[fresh[0]!.pos, MiB]]);
      const got = Buffer.alloc(2 * MiB);
      await dev.read(0, 2 * MiB, got);
      expect(got.subarray(0, MiB).equals(c)).toBe(true);
      expect(got.subarray(MiB).equals(b)).toBe(true);
    } finally {
      await s.close();
    }
  });
});
