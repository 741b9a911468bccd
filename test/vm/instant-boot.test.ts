// A VM boots from a disk that is still being restored (`backup.restore` with `instant`). The
// disk is a small system image built on the host: an MBR, a 16 MiB raw partition, and an ext4
// partition holding a static busybox, a start script and data files. Server A backs it up to a
// real RGW; server B (another data dir) restores it instantly through the fault proxy, which
// holds every fetch of the raw partition's blocks: the background restore's workers take
// blocks in order, so all of them wait there, and every block of the ext4 partition the guest
// touches is fetched by the guest's own reads (the fill hook). The guest sees the partition
// table, mounts the filesystem, runs the start script with the disk's own busybox (chroot),
// reads every file and writes new ones while the volume says `restoring N%`. Then the proxy
// lets go, the restore ends, and the disk is checked from the host: the partition table and
// the raw partition byte for byte, the filesystem with e2fsck and every file with debugfs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { RESTORE_PARALLEL } from '../../src/backup/restore.ts';
import { requires } from '../helpers/requires.ts';
import { startRgw, type Rgw } from '../helpers/rgw.ts';
import { tempDir, type RunningServer } from '../helpers/server.ts';
import { Guest } from './guest.ts';
import { startVmServer } from './vm-server.ts';
import { controlCall } from './control.ts';
import { eventually, listChecksums, writeRandomFiles, type Checksums } from './helpers.ts';

const run = promisify(execFile);
const SCENARIO_TIMEOUT_MS = 900_000;
const MiB = 1024 * 1024;
const BUCKET = 'snapnbd-instant-boot';
const TARGET = 'off';
/** The raw partition: more 1 MiB backup blocks than the restore fetches at once (RESTORE_PARALLEL). */
const RAW_START_MIB = 1;
const RAW_MIB = 16;
const FS_START_MIB = RAW_START_MIB + RAW_MIB;
const FS_MIB = 47;
const VOLUME_MIB = FS_START_MIB + FS_MIB;
/** Files of the system image: name -> MiB of random bytes. */
const DATA_FILES: Record<string, number> = { a: 1, b: 2, c: 3, d: 1, e: 4 };
/** Each other block fetch is this late: a target far away. */
const FETCH_DELAY_MS = 200;
const SECTOR = 512;

/** A DOS partition table (sector 0) with the given partitions (start and size in MiB, type). */
function mbr(parts: { startMiB: number; mib: number; type: number }[]): Buffer {
  const s = Buffer.alloc(SECTOR);
  parts.forEach((p, i) => {
    const e = 446 + 16 * i;
    s[e + 4] = p.type;
    // CHS fields are unused by Linux for LBA partitions: the "beyond CHS" marker.
    s.fill(0xff, e + 1, e + 4);
    s.fill(0xff, e + 5, e + 8);
    s.writeUInt32LE((p.startMiB * MiB) / SECTOR, e + 8);
    s.writeUInt32LE((p.mib * MiB) / SECTOR, e + 12);
  });
  s[510] = 0x55;
  s[511] = 0xaa;
  return s;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('a VM boots from a disk while it is instantly restored', () => {
  let work = '';
  let rgw: Rgw | null = null;
  let proxy: FaultProxy | null = null;
  let a: RunningServer | null = null;
  let b: RunningServer | null = null;
  const guests: Guest[] = [];

  beforeAll(async () => {
    requires('qemu-system-x86_64', 'nbdcopy', 'cpio', 'mkfs.ext4', 'e2fsck', 'debugfs', 'busybox');
    work = tempDir('snapnbd-instant-boot-');
    rgw = await startRgw();
    await rgw.makeBucket(BUCKET);
    proxy = await startFaultProxy(rgw.endpoint);
    const target = ['--backup-target', `${TARGET}=s3://${BUCKET}/vm`];
    a = await startVmServer({ dataDir: join(work, 'a'), args: [...target, '--volume', `sys=${VOLUME_MIB}M`], env: rgw.env });
    b = await startVmServer({ dataDir: join(work, 'b'), args: target, env: { ...rgw.env, AWS_ENDPOINT_URL: proxy.endpoint } });
  }, SCENARIO_TIMEOUT_MS);

  afterAll(async () => {
    for (const g of guests) await g.kill();
    proxy?.release();
    await a?.stop();
    await b?.stop();
    await proxy?.close();
    await rgw?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  }, SCENARIO_TIMEOUT_MS);

  /** The system image: partition table, raw partition, ext4 with busybox, /etc/rc and /data. */
  async function buildImage(): Promise<{ image: Buffer; files: Checksums }> {
    const root = join(work, 'root');
    for (const d of ['bin', 'etc', 'data', 'new']) mkdirSync(join(root, d), { recursive: true });
    copyFileSync('/usr/bin/busybox', join(root, 'bin', 'busybox'));
    // Runs inside the chroot: everything it executes and reads comes from the restoring disk.
    writeFileSync(join(root, 'etc', 'rc'), [
      '/bin/busybox echo "rc: $(/bin/busybox cat /etc/hostname) is up"',
      'cd /data && /bin/busybox sha256sum *',
      '/bin/busybox cp /data/e /data/e.copy',
      '/bin/busybox echo booted > /etc/booted',
      '',
    ].join('\n'));
    writeFileSync(join(root, 'etc', 'hostname'), 'restored-vm\n');
    const files: Checksums = {};
    for (const [n, mib] of Object.entries(DATA_FILES)) {
      const data = randomBytes(mib * MiB);
      writeFileSync(join(root, 'data', n), data);
      files[n] = sha256(data);
    }
    const fs = join(work, 'fs.img');
    await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', root, fs, `${FS_MIB}M`]);
    const image = Buffer.alloc(VOLUME_MIB * MiB);
    mbr([{ startMiB: RAW_START_MIB, mib: RAW_MIB, type: 0xda }, { startMiB: FS_START_MIB, mib: FS_MIB, type: 0x83 }]).copy(image, 0);
    randomBytes(RAW_MIB * MiB).copy(image, RAW_START_MIB * MiB);
    readFileSync(fs).copy(image, FS_START_MIB * MiB);
    return { image, files };
  }

  async function restoreState(): Promise<{ state: string; percent: number }> {
    const v = await controlCall(b!.controlPath, 'volume.info', { name: 'sys' }) as { state: string; restore?: { percent: number } };
    return { state: v.state, percent: v.restore?.percent ?? 100 };
  }

  it('boots, reads and writes while restoring; after the restore the disk is exact', async () => {
    const { image, files } = await buildImage();
    const imageFile = join(work, 'sys.img');
    writeFileSync(imageFile, image);
    await run('nbdcopy', [imageFile, a!.uri('sys')]);
    await controlCall(a!.controlPath, 'snapshot.create', { volume: 'sys', name: 'golden' });
    const backup = await controlCall(a!.controlPath, 'backup.create', { target: TARGET, volume: 'sys', snapshot: 'golden', wait: true }) as { id: string };

    // The raw partition's blocks (unencrypted target: named by their SHA-256) are held; every
    // other block fetch is late. Block 0 (the partition table) is restored first, then the
    // background's workers all wait on the raw partition.
    expect(RAW_MIB).toBeGreaterThan(RESTORE_PARALLEL); // else a worker would get past the raw partition
    const held = new Set<string>();
    for (let k = RAW_START_MIB; k < FS_START_MIB; k++) held.add(sha256(image.subarray(k * MiB, (k + 1) * MiB)));
    const isHeld = (u: string): boolean => [...held].some((n) => u.includes(n));
    proxy!.inject('hold', 1_000_000, (m, u) => m === 'GET' && isHeld(u));
    proxy!.inject('delay', 1_000_000, (m, u) => m === 'GET' && u.includes('/blocks/'), FETCH_DELAY_MS);
    const seenBefore = proxy!.seen.length;
    await controlCall(b!.controlPath, 'backup.restore', { target: TARGET, id: backup.id, volume: 'sys', instant: true });
    const atStart = await restoreState();
    expect(atStart.state).toBe('restoring');

    const g = await Guest.boot({ name: 'instant-boot', drives: [`file=nbd://127.0.0.1:${b!.port}/sys,format=raw,if=virtio`] });
    guests.push(g);
    expect(await g.sh('cat /proc/partitions')).toMatch(/vda1[\s\S]*vda2/);
    await g.sh('mkdir -p /mnt/sys && mount -t ext4 /dev/vda2 /mnt/sys');
    const rc = await g.sh('chroot /mnt/sys /bin/busybox sh /etc/rc');
    expect(rc).toContain('rc: restored-vm is up');
    const sums: Checksums = {};
    for (const m of rc.matchAll(/^([0-9a-f]{64}) +(\S+)$/gm)) sums[m[2]!] = m[1]!;
    expect(sums).toEqual(files);
    const written = await writeRandomFiles(g, '/mnt/sys/new', { x: 16, y: 40 });
    await g.sh('sync');
    expect(await listChecksums(g, '/mnt/sys/new')).toEqual(written);
    expect(await listChecksums(g, '/mnt/sys/data')).toEqual({ ...files, 'e.copy': files.e! });

    // All of that happened while the disk was restoring: the raw partition is still held, and
    // the filesystem's blocks were fetched because the guest read them.
    const during = await restoreState();
    expect(during.state).toBe('restoring');
    expect(during.percent).toBeLessThan(100);
    expect(during.percent).toBeGreaterThan(atStart.percent);
    const gets = proxy!.seen.slice(seenBefore).filter((r) => r.startsWith('GET') && r.includes('/blocks/'));
    const heldDone = gets.filter(isHeld).length;
    expect(gets.length - heldDone).toBeGreaterThan(3);

    proxy!.clear();
    proxy!.release();
    await eventually('the instant restore ends', restoreState, (s) => s.state === 'ready', 300_000);

    // The guest keeps running across the end of the restore; a remount reads everything again.
    await g.sh('umount /mnt/sys && mount -t ext4 /dev/vda2 /mnt/sys');
    expect(await listChecksums(g, '/mnt/sys/new')).toEqual(written);
    expect(await g.sh('cat /mnt/sys/etc/booted')).toContain('booted');
    const raw = await g.sh('sha256sum /dev/vda1');
    expect(raw).toContain(sha256(image.subarray(RAW_START_MIB * MiB, FS_START_MIB * MiB)));
    await g.sh('umount /mnt/sys');
    await g.close();

    // From the host: the disk outside the filesystem is byte for byte the backup's, the
    // filesystem is clean and holds every file the image had and the guest wrote.
    const got = join(work, 'got.img');
    await run('nbdcopy', [b!.uri('sys'), got]);
    const disk = readFileSync(got);
    expect(disk.subarray(0, FS_START_MIB * MiB).equals(image.subarray(0, FS_START_MIB * MiB))).toBe(true);
    const fsFile = join(work, 'got-fs.img');
    writeFileSync(fsFile, disk.subarray(FS_START_MIB * MiB));
    await run('e2fsck', ['-f', '-n', fsFile]);
    const dump = async (path: string): Promise<string> => {
      const out = join(work, 'dumped');
      rmSync(out, { force: true });
      await run('debugfs', ['-R', `dump ${path} ${out}`, fsFile]);
      return sha256(readFileSync(out));
    };
    for (const [n, sum] of Object.entries(files)) expect(await dump(`/data/${n}`)).toBe(sum);
    for (const [n, sum] of Object.entries(written)) expect(await dump(`/new/${n}`)).toBe(sum);
  }, SCENARIO_TIMEOUT_MS);
});
