// Persistence across a restart: data written with nbdcopy (and with a flush from qemu-io) is there
// after SIGTERM (exit code 0) and a new server on the same data dir; the volumes are found in the
// data dir without being named again.
import { randomFillSync } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { startServer, tempDir, type RunningServer } from '../helpers/server.ts';
import { mustRun } from './tool.ts';

const MiB = 2 ** 20;
const SIZE = 48 * MiB;
const VOLUME_ARGS = ['--volume', `keep=${SIZE / MiB}M`, '--volume', 'second=8M'];

describe('restart persistence', () => {
  let dir: string;
  let dataDir: string;
  let content: Buffer;
  let server: RunningServer | null = null;

  beforeAll(async () => {
    requires('nbdcopy', 'qemu-io');
    dir = tempDir('snapnbd-restart-');
    dataDir = join(dir, 'data');
    const image = join(dir, 'in.img');
    content = randomFillSync(Buffer.alloc(SIZE));
    writeFileSync(image, content);
    server = await startServer({ dataDir, args: VOLUME_ARGS });
    await mustRun('nbdcopy', [image, server.uri('keep')]);
    await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 4096 8192', '-c', 'flush', server.uri('second')]);
    const code = await server.stop();
    server = null;
    expect(code).toBe(0);
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function expectData(s: RunningServer, tag: string): Promise<void> {
    const out = join(dir, `out-${tag}.img`);
    await mustRun('nbdcopy', [s.uri('keep'), out]);
    expect(readFileSync(out).equals(content)).toBe(true);
    rmSync(out);
    const check = await mustRun('qemu-io', ['-f', 'raw', '-c', 'read -P 0x6b 4096 8192', '-c', 'read -P 0 0 4096', s.uri('second')]);
    expect(check.stdout).toContain('read 8192/8192 bytes at offset 4096');
    expect(check.stdout).toContain('read 4096/4096 bytes at offset 0');
    expect(check.stdout).not.toContain('Pattern verification failed');
  }

  it('reads back after SIGTERM and a restart with the same arguments', async () => {
    server = await startServer({ dataDir, args: VOLUME_ARGS });
    await expectData(server, 'same-args');
    expect(await server.stop()).toBe(0);
    server = null;
  });

  it('finds the volumes in the data dir when restarted without --volume', async () => {
    server = await startServer({ dataDir });
    await expectData(server, 'no-args');
    expect(await server.stop()).toBe(0);
    server = null;
  });
});
