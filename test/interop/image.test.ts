// IMAGE argument: a raw file served as a volume named after it. The volume reads the image's
// content; writes over NBD (from any client) never change the image file.
import { randomFillSync } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { startServer, tempDir } from '../helpers/server.ts';
import { mustRun, sha256File, tool } from './tool.ts';

const MiB = 2 ** 20;
const IMAGE_SIZE = 20 * MiB;

describe('IMAGE argument', () => {
  it('serves the image content, and writes through NBD never change the image', async () => {
    requires('nbdcopy', 'qemu-io', 'nbdinfo');
    const dir = tempDir('snapnbd-image-');
    const image = join(dir, 'golden.img');
    const original = randomFillSync(Buffer.alloc(IMAGE_SIZE));
    writeFileSync(image, original);
    const before = await sha256File(image);
    const dataDir = join(dir, 'data');
    const args = ['--volume', 'other=4M', image];
    let server = await startServer({ dataDir, args });
    try {
      const list = await mustRun('nbdinfo', ['--list', '--json', server.uri('')]);
      const exports = (JSON.parse(list.stdout) as { exports: { 'export-name': string; 'export-size': number }[] }).exports;
      expect(exports.find((e) => e['export-name'] === 'golden')?.['export-size']).toBe(IMAGE_SIZE);

      const out = join(dir, 'out.img');
      await mustRun('nbdcopy', [server.uri('golden'), out]);
      expect(readFileSync(out).equals(original)).toBe(true);

      // Change it every way qemu-io can, then copy a different image over part of it: each tool
      // succeeds, the export shows the change, the image file's bytes never move.
      await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 1M', '-c', `write -z ${2 * MiB} 1M`, '-c', `discard ${4 * MiB} 1M`, server.uri('golden')]);
      const patch = randomFillSync(Buffer.alloc(MiB));
      const patchFile = join(dir, 'patch.img');
      writeFileSync(patchFile, patch);
      await mustRun('qemu-io', ['-f', 'raw', '-c', `write -s ${patchFile} ${8 * MiB} 1M`, '-c', 'flush', server.uri('golden')]);
      const want = Buffer.from(original);
      want.fill(0x42, 0, MiB);
      want.fill(0, 2 * MiB, 3 * MiB);
      patch.copy(want, 8 * MiB);
      const shown = async (): Promise<Buffer> => {
        await mustRun('nbdcopy', [server.uri('golden'), out]);
        const got = readFileSync(out);
        // A discard may read back as zeros or as the old data; take the export's word for that MiB.
        got.copy(want, 4 * MiB, 4 * MiB, 5 * MiB);
        const mib4 = got.subarray(4 * MiB, 5 * MiB);
        expect(mib4.equals(original.subarray(4 * MiB, 5 * MiB)) || mib4.every((x) => x === 0), 'discarded MiB: old data or zeros').toBe(true);
        return got;
      };
      expect((await shown()).equals(want), 'the export shows every change').toBe(true);
      expect(await sha256File(image)).toBe(before);
      // After a restart the volume still holds its changes, and the image is still the image.
      expect(await server.stop()).toBe(0);
      expect(await sha256File(image)).toBe(before);
      server = await startServer({ dataDir, args });
      expect((await shown()).equals(want), 'the changes survive a restart').toBe(true);
      expect(await server.stop()).toBe(0);
    } finally {
      await server.stop();
    }
    expect(await sha256File(image)).toBe(before);
    expect(readFileSync(image).equals(original)).toBe(true);
    rmSync(dir, { recursive: true, force: true });
  });
});
