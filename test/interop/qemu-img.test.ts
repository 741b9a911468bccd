// qemu-img against snapnbd and nbdkit memory: info, convert in and out, compare (equal and
// unequal), and map (zero/data extents match what was written).
import { randomFillSync } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { PEER_KINDS, withPeers } from '../helpers/peers.ts';
import { tempDir } from '../helpers/server.ts';
import { mustRun, tool } from './tool.ts';

const MiB = 2 ** 20;
const SIZE = 64 * MiB;
/** Data ranges of the source image (1 MiB aligned, so every server reports them the same way). */
const DATA: [number, number][] = [[2 * MiB, 3 * MiB], [20 * MiB, MiB], [63 * MiB, MiB]];

interface MapEntry { start: number; length: number; zero: boolean; data: boolean }

/** Merge neighbours with the same zero/data state: servers choose their own extent sizes. */
function coalesce(entries: MapEntry[]): MapEntry[] {
  const out: MapEntry[] = [];
  for (const e of entries) {
    const last = out.at(-1);
    if (last && last.zero === e.zero && last.data === e.data && last.start + last.length === e.start) last.length += e.length;
    else out.push({ start: e.start, length: e.length, zero: e.zero, data: e.data });
  }
  return out;
}

let dir: string;
let source: string;

describe('qemu-img', () => {
  beforeAll(() => {
    dir = tempDir('snapnbd-qemu-img-');
    source = join(dir, 'source.raw');
    const fd = openSync(source, 'w');
    ftruncateSync(fd, SIZE);
    for (const [off, len] of DATA) writeSync(fd, randomFillSync(Buffer.alloc(len)), 0, len, off);
    closeSync(fd);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each(PEER_KINDS)('info, convert in/out, compare, map (%s)', async (kind) => {
    requires('qemu-img', 'qemu-io', 'nbdkit');
    const back = join(dir, `back-${kind}.raw`);
    await withPeers([kind], async (uri) => {
      const info = JSON.parse((await mustRun('qemu-img', ['info', '--output=json', uri])).stdout) as { 'virtual-size': number; format: string };
      expect(info['virtual-size']).toBe(SIZE);
      expect(info.format).toBe('raw');

      await mustRun('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, uri]);
      const same = await mustRun('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri]);
      expect(same.stdout).toContain('Images are identical.');

      const map = coalesce(JSON.parse((await mustRun('qemu-img', ['map', '--output=json', '-f', 'raw', uri])).stdout) as MapEntry[]);
      const expected: MapEntry[] = [];
      let pos = 0;
      for (const [off, len] of DATA) {
        if (off > pos) expected.push({ start: pos, length: off - pos, zero: true, data: false });
        expected.push({ start: off, length: len, zero: false, data: true });
        pos = off + len;
      }
      if (pos < SIZE) expected.push({ start: pos, length: SIZE - pos, zero: true, data: false });
      // Soft: a wrong map must not hide what compare and convert say.
      expect.soft(map).toEqual(expected);

      // One changed byte: compare must find it (it reports the 512-byte sector holding it). The
      // source is random: write the byte's complement, or 1 run in 256 changes nothing.
      const was = readFileSync(source).readUInt8(20 * MiB + 4097);
      await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x${(was ^ 0xff).toString(16)} ${20 * MiB + 4097} 1`, uri]);
      const differ = await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, uri]);
      expect(differ.code).toBe(1);
      expect(differ.stdout).toContain(`Content mismatch at offset ${20 * MiB + 4096}!`);

      await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, back]);
    });
    const want = readFileSync(source);
    want[20 * MiB + 4097] = want[20 * MiB + 4097]! ^ 0xff;
    expect(readFileSync(back).equals(want)).toBe(true);
    rmSync(back);
  });
});
