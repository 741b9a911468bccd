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
    const server = await startServer({ args: ['--volume', 'other=4M', image] });
    try {
      const list = await mustRun('nbdinfo', ['--list', '--json', server.uri('')]);
      const exports = (JSON.parse(list.stdout) as { exports: { 'export-name': string; 'export-size': number }[] }).exports;
      expect(exports.find((e) => e['export-name'] === 'golden')?.['export-size']).toBe(IMAGE_SIZE);

      const out = join(dir, 'out.img');
      await mustRun('nbdcopy', [server.uri('golden'), out]);
      expect(readFileSync(out).equals(original)).toBe(true);

      // Try every way of changing it. The image's bytes must survive whatever the export answers.
      const attempts = await Promise.all([
        tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 1M', '-c', `write -z ${2 * MiB} 1M`, '-c', `discard ${4 * MiB} 1M`, server.uri('golden')]),
        tool('nbdcopy', ['--flush', join(dir, 'out.img'), server.uri('golden')]),
      ]);
      expect(attempts.length).toBe(2);
      expect(await sha256File(image)).toBe(before);
      // Whatever the export now shows, after a restart the image is still the image.
      expect(await server.stop()).toBe(0);
    } finally {
      await server.stop();
    }
    expect(await sha256File(image)).toBe(before);
    expect(readFileSync(image).equals(original)).toBe(true);
    rmSync(dir, { recursive: true, force: true });
  });
});
