// Online resize with the Linux kernel's NBD client, inside a VM (test/vm/README.md): an ext4 on a
// volume that grows while it is attached and mounted. The attached device keeps its old size and
// keeps working (NBD cannot announce a new size mid-connection); after reattaching, the device
// has the new size, `resize2fs` grows the mounted filesystem into it, and every file written
// before and during the grow is intact. A shrink is refused while the device is attached.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { requires } from '../helpers/requires.ts';
import { tempDir, type RunningServer } from '../helpers/server.ts';
import { Guest } from './guest.ts';
import { startVmServer } from './vm-server.ts';
import { ControlCallError, controlCall } from './control.ts';
import { SCENARIO_TIMEOUT_MS, attach, detach, eventually, exportStats, freePort, listChecksums, writeRandomFiles } from './helpers.ts';

const MIB = 1024 * 1024;
const OLD_SIZE = 64 * MIB;
const NEW_SIZE = 192 * MIB;
/** ext4's own metadata: the grown filesystem has at least this share of the new size in blocks. */
const MIN_FS_SHARE = 0.9;

async function deviceBytes(g: Guest, dev: string): Promise<number> {
  return Number((await g.sh(`cat /sys/block/${dev}/size`)).trim()) * 512;
}

/** The mounted filesystem's size in bytes (df -k: total 1K blocks). */
async function fsBytes(g: Guest, dir: string): Promise<number> {
  const out = await g.sh(`df -k ${dir} | tail -1`);
  return Number(out.trim().split(/\s+/)[1]) * 1024;
}

describe('Linux kernel nbd-client in a VM: online resize', () => {
  let dataDir = '';
  let server: RunningServer | null = null;
  let guest: Guest | null = null;

  beforeAll(async () => {
    requires('qemu-system-x86_64', 'busybox', 'cpio');
    dataDir = tempDir('snapnbd-vm-resize-');
    const port = await freePort();
    server = await startVmServer({ dataDir, args: ['--listen', `127.0.0.1:${port}`, '--volume', `grow=${OLD_SIZE / MIB}M`] });
    guest = await Guest.boot({ nbdPort: port, name: 'kernel-resize' });
  }, SCENARIO_TIMEOUT_MS);

  afterAll(async () => {
    await guest?.close();
    await server?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, SCENARIO_TIMEOUT_MS);

  it('mkfs.ext4, grow the volume while mounted, reattach, resize2fs: the filesystem sees the new size, old files intact', async () => {
    const g = guest!;
    const ctl = server!.controlPath;
    await attach(g, '/dev/nbd0', 'grow');
    expect(await deviceBytes(g, 'nbd0')).toBe(OLD_SIZE);
    await g.sh('/sbin/mkfs.ext4 -q -F /dev/nbd0 && mkdir -p /mnt/grow && mount -o noinit_itable /dev/nbd0 /mnt/grow');
    const before = await writeRandomFiles(g, '/mnt/grow', { a: 96, b: 48 });

    const r = await controlCall(ctl, 'volume.resize', { name: 'grow', size: NEW_SIZE }) as { size: number; previousSize: number; connections: number };
    expect(r).toMatchObject({ size: NEW_SIZE, previousSize: OLD_SIZE, connections: 1 });
    // The attached device: its old size, and it keeps working.
    expect(await deviceBytes(g, 'nbd0')).toBe(OLD_SIZE);
    const during = await writeRandomFiles(g, '/mnt/grow', { c: 32 });
    await g.sh('sync');
    expect(await listChecksums(g, '/mnt/grow')).toEqual({ ...before, ...during });
    // Never shrunk while attached.
    const refused = await controlCall(ctl, 'volume.resize', { name: 'grow', size: 32 * MIB, shrink: true }).then(() => null, (e: unknown) => e);
    expect(refused).toBeInstanceOf(ControlCallError);
    expect((refused as ControlCallError).code).toBe('VOLUME_BUSY');

    await g.sh('umount /mnt/grow');
    await detach(g, '/dev/nbd0');
    await eventually('the server sees the client gone', () => exportStats(ctl, 'grow'), (s) => (s?.connections ?? 0) === 0);
    await attach(g, '/dev/nbd0', 'grow');
    expect(await deviceBytes(g, 'nbd0')).toBe(NEW_SIZE);
    await g.sh('mount -o noinit_itable /dev/nbd0 /mnt/grow');
    expect(await fsBytes(g, '/mnt/grow')).toBeLessThan(OLD_SIZE);
    await g.sh('/sbin/resize2fs /dev/nbd0 2>&1');
    expect(await fsBytes(g, '/mnt/grow')).toBeGreaterThan(NEW_SIZE * MIN_FS_SHARE);
    // The filesystem writes on (a full new-size write is too slow under TCG), the old files are intact.
    const after = await writeRandomFiles(g, '/mnt/grow', { d: 64 });
    await g.sh('sync');
    expect(await listChecksums(g, '/mnt/grow')).toEqual({ ...before, ...during, ...after });
    await g.sh('umount /mnt/grow');
    await detach(g, '/dev/nbd0');
  }, SCENARIO_TIMEOUT_MS);
});
