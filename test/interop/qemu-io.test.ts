// qemu-io against snapnbd and nbdkit memory: pattern writes and verified reads, write -z (with
// and without unmap), discard, and many AIO requests in flight verified by pattern.
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { PEER_KINDS, withPeers } from '../helpers/peers.ts';
import { mustRun, tool } from './tool.ts';

const KiB = 1024;
const MiB = 2 ** 20;
const AIO_REQUESTS = 128;

async function qemuIo(uri: string, commands: string[]): Promise<string> {
  const args = ['-f', 'raw'];
  for (const c of commands) args.push('-c', c);
  const r = await tool('qemu-io', [...args, uri]);
  // qemu-io exits 0 even when some commands fail; the words decide, and they go in the failure.
  return `${r.stdout}${r.stderr}exit ${r.code}\n`;
}

function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

describe('qemu-io', () => {
  it.each(PEER_KINDS)('writes patterns and reads them back verified (%s)', async (kind) => {
    requires('qemu-io', 'nbdkit');
    await withPeers([kind], async (uri) => {
      const out = await qemuIo(uri, [
        'write -P 0xab 0 1M',
        `write -P 0xcd ${MiB + 512} 3000`,
        `write -f -P 0x11 ${5 * MiB} 64k`,
        'read -P 0xab 0 1M',
        `read -P 0xcd ${MiB + 512} 3000`,
        `read -P 0 ${MiB} 512`,
        `read -P 0 ${MiB + 3512} 100`,
        `read -P 0x11 ${5 * MiB} 64k`,
        'flush',
      ]);
      expect(out).toContain('wrote 1048576/1048576 bytes at offset 0');
      expect(out).toContain(`read 3000/3000 bytes at offset ${MiB + 512}`);
      expect(count(out, 'read ')).toBe(5);
      expect(out).not.toContain('Pattern verification failed');
      expect(out).not.toMatch(/error|failed/i);
      // The check is live: a wrong pattern is reported.
      const wrong = await qemuIo(uri, ['read -P 0xee 0 4k']);
      expect(wrong).toContain('Pattern verification failed at offset 0');
    });
  });

  it.each(PEER_KINDS)('write -z, write -z -u and discard leave zeros, neighbours intact (%s)', async (kind) => {
    requires('qemu-io', 'nbdkit');
    await withPeers([kind], async (uri) => {
      const out = await qemuIo(uri, [
        'write -P 0x77 0 8M',
        `write -z ${MiB} 1M`,
        `write -z -u ${3 * MiB} 1M`,
        `write -z ${5 * MiB + 100} 1000`,
        `discard ${6 * MiB} 1M`,
        `read -P 0x77 0 1M`,
        `read -P 0 ${MiB} 1M`,
        `read -P 0x77 ${2 * MiB} 1M`,
        `read -P 0 ${3 * MiB} 1M`,
        `read -P 0x77 ${4 * MiB} ${MiB + 100}`,
        `read -P 0 ${5 * MiB + 100} 1000`,
        `read -P 0x77 ${5 * MiB + 1100} ${MiB - 1100}`,
        `read -P 0x77 ${7 * MiB} 1M`,
      ]);
      expect(count(out, 'read ')).toBe(8);
      expect(out).toContain(`discard 1048576/1048576 bytes at offset ${6 * MiB}`);
      expect(out).not.toContain('Pattern verification failed');
      expect(out).not.toMatch(/error|failed/i);
      // After a discard the content is unspecified until rewritten: zero or the old pattern.
      const after = await qemuIo(uri, [`read -P 0 ${6 * MiB} 1M`]);
      if (after.includes('Pattern verification failed')) {
        expect(await qemuIo(uri, [`read -P 0x77 ${6 * MiB} 1M`])).not.toContain('Pattern verification failed');
      }
    });
  });

  it.each(PEER_KINDS)(`keeps ${AIO_REQUESTS} AIO writes and reads in flight and verifies every one (%s)`, async (kind) => {
    requires('qemu-io', 'nbdkit');
    await withPeers([kind], async (uri) => {
      const writes: string[] = [];
      const reads: string[] = [];
      for (let i = 0; i < AIO_REQUESTS; i++) {
        // Mixed sizes and alignments; pattern byte = request number, so misplaced data shows.
        const size = [4 * KiB, 64 * KiB, 512, 12_288][i % 4]!;
        const offset = i * 128 * KiB + (i % 3) * 512;
        writes.push(`aio_write -P ${(i % 250) + 1} ${offset} ${size}`);
        reads.push(`aio_read -P ${(i % 250) + 1} ${offset} ${size}`);
      }
      const out = await qemuIo(uri, [...writes, 'aio_flush', ...reads, 'aio_flush']);
      expect(count(out, 'wrote ')).toBe(AIO_REQUESTS);
      expect(count(out, 'read ')).toBe(AIO_REQUESTS);
      expect(out).not.toContain('Pattern verification failed');
      expect(out).not.toMatch(/error|failed/i);
      const check = await mustRun('qemu-io', ['-f', 'raw', '-c', `read -P 0 ${AIO_REQUESTS * 128 * KiB} 1M`, uri]);
      expect(check.stdout).toContain('read 1048576/1048576');
      expect(check.stdout).not.toContain('Pattern verification failed');
    });
  });
});
