// qemu itself as the NBD client: a volume is a VM's virtio disk. The first VM makes a filesystem
// and files on vm1 and powers off; the host snapshots vm1 and clones the snapshot into vm2; a
// second VM boots with vm2 as its disk, finds the files and writes more; vm1 is unchanged.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { requires } from '../helpers/requires.ts';
import { tempDir, type RunningServer } from '../helpers/server.ts';
import { Guest } from './guest.ts';
import { startVmServer } from './vm-server.ts';
import { controlCall } from './control.ts';
import { SCENARIO_TIMEOUT_MS, listChecksums, writeRandomFiles } from './helpers.ts';


/** SHA-256 of a whole export, read by nbdcopy (libnbd), never by the VM under test. */
async function exportHash(uri: string): Promise<string> {
  const p = spawn('nbdcopy', [uri, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const h = createHash('sha256');
  let err = '';
  p.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
  p.stdout.on('data', (d: Buffer) => h.update(d));
  const code = await new Promise<number | null>((resolve) => p.once('close', resolve));
  if (code !== 0) throw new Error(`nbdcopy ${uri} exited ${code}: ${err}`);
  return h.digest('hex');
}

describe('a volume as a VM disk (qemu as the NBD client)', () => {
  let dataDir = '';
  let server: RunningServer | null = null;
  const guests: Guest[] = [];

  beforeAll(async () => {
    requires('qemu-system-x86_64', 'nbdcopy', 'cpio');
    dataDir = tempDir('snapnbd-vm-disk-');
    server = await startVmServer({ dataDir, args: ['--volume', 'vm1=256M'] });
  }, SCENARIO_TIMEOUT_MS);

  afterAll(async () => {
    for (const g of guests) await g.kill();
    await server?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, SCENARIO_TIMEOUT_MS);

  const boot = async (volume: string): Promise<Guest> => {
    const g = await Guest.boot({
      name: `disk-${volume}`,
      drives: [`file=nbd://127.0.0.1:${server!.port}/${volume},format=raw,if=virtio`],
    });
    guests.push(g);
    return g;
  };

  it('files written by a VM on vm1 are read by a second VM booted from a clone of its snapshot; vm1 is unchanged', async () => {
    const ctl = server!.controlPath;
    const a = await boot('vm1');
    await a.sh('/sbin/mkfs.ext4 -q -F /dev/vda && mkdir -p /mnt/d && mount /dev/vda /mnt/d');
    const files = await writeRandomFiles(a, '/mnt/d', { boot: 24, etc: 3, home: 40 });
    await a.sh('sync && umount /mnt/d');
    await a.close();
    expect(a.running).toBe(false);

    await controlCall(ctl, 'snapshot.create', { volume: 'vm1', name: 'golden' });
    await controlCall(ctl, 'volume.clone', { volume: 'vm1', snapshot: 'golden', name: 'vm2' });
    const vm1Before = await exportHash(server!.uri('vm1'));
    expect(await exportHash(server!.uri('vm2'))).toBe(vm1Before);

    const b = await boot('vm2');
    await b.sh('mkdir -p /mnt/d && mount /dev/vda /mnt/d');
    expect(await listChecksums(b, '/mnt/d')).toEqual(files);
    const more = await writeRandomFiles(b, '/mnt/d', { var: 8 });
    await b.sh('sync');
    expect(await listChecksums(b, '/mnt/d')).toEqual({ ...files, ...more });
    await b.sh('umount /mnt/d');
    await b.close();

    expect(await exportHash(server!.uri('vm1'))).toBe(vm1Before);
    expect(await exportHash(server!.uri('vm1@golden'))).toBe(vm1Before);
    expect(await exportHash(server!.uri('vm2'))).not.toBe(vm1Before);
  }, SCENARIO_TIMEOUT_MS);
});
