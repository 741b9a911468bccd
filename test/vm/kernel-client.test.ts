// The Linux kernel's NBD client against snapnbd, inside a VM (test/vm/README.md): snapshots of a
// frozen ext4, TRIM giving space back, multi-connection writes, and a server restart under a
// mounted filesystem. One VM and one server serve all four scenarios (each on its own volume and
// /dev/nbdN) to keep the suite's boot cost to one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { requires } from '../helpers/requires.ts';
import { tempDir, type RunningServer } from '../helpers/server.ts';
import { Guest } from './guest.ts';
import { startVmServer } from './vm-server.ts';
import { controlCall } from './control.ts';
import {
  FILE_BLOCK, SCENARIO_TIMEOUT_MS, attach, bulkTimeoutMs, callWhenIdle, detach, diskUsage, eventually, exportStats, filesBytes,
  freePort, listChecksums, writeRandomFiles,
} from './helpers.ts';

const MIB = 1024 * 1024;
/** The TRIM scenario writes its file twice and reads it back: 272 s at load 13 (TCG). */
const TRIM_SCENARIO_TIMEOUT_MS = 1_200_000;
/** The volumes the server starts with; `trim` is created by its scenario (own chunk size). */
const VOLUME_ARGS = ['--volume', 'default=512M', '--volume', 'multi=256M', '--volume', 'persist=128M'];
/** A chunk size no other volume uses: the trim volume's chunks get segment files of their own. */
const TRIM_CHUNK_SIZE = 131072;
const TRIM_FILE_MIB = 128;
/** Of the file's chunks, this share at least must be freed (ext4 keeps a few for its metadata). */
const TRIM_MIN_FREED_SHARE = 0.9;
/** Of the file's bytes, this share at least goes back to the host's file system (st_blocks; 0.55 seen: segments more than half live keep their holes). */
const TRIM_MIN_RETURNED_SHARE = 0.4;
/** Rewriting as much as was trimmed may add this much at most (metadata, a partly used segment). */
const TRIM_REUSE_SLACK_BYTES = 16 * MIB;

describe('Linux kernel nbd-client in a VM', () => {
  let dataDir = '';
  let port = 0;
  let server: RunningServer | null = null;
  let guest: Guest | null = null;
  const serverArgs = (): string[] => ['--listen', `127.0.0.1:${port}`, ...VOLUME_ARGS];

  beforeAll(async () => {
    requires('qemu-system-x86_64', 'busybox', 'cpio');
    dataDir = tempDir('snapnbd-vm-kernel-');
    // A fixed port besides the helper's own: the restart scenario comes back on the same one,
    // and the guest's forwarder targets it.
    port = await freePort();
    server = await startVmServer({ dataDir, args: serverArgs() });
    guest = await Guest.boot({ nbdPort: port, name: 'kernel-client' });
  }, SCENARIO_TIMEOUT_MS);

  afterAll(async () => {
    await guest?.close();
    await server?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  }, SCENARIO_TIMEOUT_MS);

  it('snapshot of a frozen ext4: the snapshot export shows exactly the files at snapshot time; rollback restores them', async () => {
    const g = guest!;
    const ctl = server!.controlPath;
    await attach(g, '/dev/nbd0', 'default');
    // The packages' tools by path: busybox's shell prefers its own applets (fsfreeze, fstrim).
    await g.sh('/sbin/mkfs.ext4 -q -F /dev/nbd0 && mkdir -p /mnt/head /mnt/snap && mount -o noinit_itable /dev/nbd0 /mnt/head');
    const atSnapshot = await writeRandomFiles(g, '/mnt/head', { a: 16, b: 8, c: 3 });
    await g.sh('sync && /sbin/fsfreeze -f /mnt/head');
    try {
      await controlCall(ctl, 'snapshot.create', { volume: 'default', name: 's1' });
    } finally {
      await g.sh('/sbin/fsfreeze -u /mnt/head');
    }
    const a2 = await writeRandomFiles(g, '/mnt/head', { a: 12, d: 5 });
    await g.sh('rm /mnt/head/b && sync');
    const afterwards = { a: a2.a!, c: atSnapshot.c!, d: a2.d! };
    expect(a2.a).not.toBe(atSnapshot.a);
    expect(await listChecksums(g, '/mnt/head')).toEqual(afterwards);

    await attach(g, '/dev/nbd1', 'default@s1', '-readonly');
    await g.sh('mount -o ro,noload /dev/nbd1 /mnt/snap');
    expect(await listChecksums(g, '/mnt/snap')).toEqual(atSnapshot);
    // The snapshot refuses writes at the device level too (the export is read-only).
    const w = await g.run('dd if=/dev/zero of=/dev/nbd1 bs=4096 count=1 oflag=direct 2>&1');
    expect(w.status).not.toBe(0);
    await g.sh('umount /mnt/snap');
    await detach(g, '/dev/nbd1');
    await g.sh('umount /mnt/head');
    await detach(g, '/dev/nbd0');

    await callWhenIdle(ctl, 'snapshot.rollback', { volume: 'default', name: 's1' });
    await attach(g, '/dev/nbd0', 'default');
    await g.sh('mount -o noinit_itable /dev/nbd0 /mnt/head');
    expect(await listChecksums(g, '/mnt/head')).toEqual(atSnapshot);
    await g.sh('umount /mnt/head');
    await detach(g, '/dev/nbd0');
  }, SCENARIO_TIMEOUT_MS);

  it('fstrim sends TRIM: the store frees the chunks, gives the space back to the file system, and rewriting does not grow the data dir', async () => {
    const g = guest!;
    const ctl = server!.controlPath;
    await controlCall(ctl, 'volume.create', { name: 'trim', size: 256 * MIB, chunkSize: TRIM_CHUNK_SIZE });
    await attach(g, '/dev/nbd2', 'trim');
    await g.sh('/sbin/mkfs.ext4 -q -F /dev/nbd2 && mkdir -p /mnt/trim && mount -o noinit_itable /dev/nbd2 /mnt/trim');
    const blocks = (TRIM_FILE_MIB * MIB) / FILE_BLOCK;
    const stats = async (): Promise<{ allocated: number; live: number; du: number }> => {
      const s = await controlCall(ctl, 'server.stats') as { store: { allocatedBytes: number; liveBytes: number } };
      return { allocated: s.store.allocatedBytes, live: s.store.liveBytes, du: diskUsage(dataDir) };
    };
    const fileBytes = filesBytes({ big: blocks });
    await writeRandomFiles(g, '/mnt/trim', { big: blocks });
    await g.sh('sync', bulkTimeoutMs(fileBytes));
    const written = await eventually('the file reaches the store', stats, (s) => s.live >= TRIM_FILE_MIB * MIB);
    await g.sh('rm /mnt/trim/big && sync');
    const out = await g.sh('/sbin/fstrim -v /mnt/trim');
    const trimmed = Number(/(\d+) bytes/.exec(out)?.[1] ?? NaN);
    expect(trimmed).toBeGreaterThanOrEqual(TRIM_FILE_MIB * MIB);
    const freed = await eventually('chunks freed after fstrim', stats, (s) => written.live - s.live >= TRIM_FILE_MIB * MIB * TRIM_MIN_FREED_SHARE);
    // ...and the host's file system gets the blocks back (freed tails cut, emptied or compacted
    // segment files deleted), within seconds of the commit that frees them.
    const returned = await eventually('space returned to the file system after fstrim', stats,
      (s) => written.du - s.du >= TRIM_FILE_MIB * MIB * TRIM_MIN_RETURNED_SHARE);
    // The same amount written again lands in the freed slots: the data dir does not grow.
    const again = await writeRandomFiles(g, '/mnt/trim', { big2: blocks });
    await g.sh('sync', bulkTimeoutMs(fileBytes));
    const rewritten = await eventually('the second file reaches the store', stats, (s) => s.live >= TRIM_FILE_MIB * MIB);
    console.log(`[vm] fstrim: trimmed ${trimmed} B; live ${written.live} -> ${freed.live} -> ${rewritten.live} B; data dir (du) ${written.du} -> ${returned.du} -> ${rewritten.du} B`);
    expect(rewritten.du - written.du).toBeLessThanOrEqual(TRIM_REUSE_SLACK_BYTES);
    expect(await listChecksums(g, '/mnt/trim', fileBytes)).toEqual(again);
    await g.sh('umount /mnt/trim');
    await detach(g, '/dev/nbd2');
  }, TRIM_SCENARIO_TIMEOUT_MS);

  it('nbd-client -C 4: four connections, parallel writers, every checksum verified through one fresh connection', async () => {
    const g = guest!;
    const ctl = server!.controlPath;
    await attach(g, '/dev/nbd3', 'multi', '-C 4');
    expect((await exportStats(ctl, 'multi'))?.connections).toBe(4);
    await g.sh('/sbin/mkfs.ext4 -q -F /dev/nbd3 && mkdir -p /mnt/multi && mount -o noinit_itable /dev/nbd3 /mnt/multi');
    const files = { w1: 160, w2: 200, w3: 240, w4: 280 };
    const written = await writeRandomFiles(g, '/mnt/multi', files, true);
    const bytes = filesBytes(files);
    await g.sh('sync && umount /mnt/multi', bulkTimeoutMs(bytes));
    await detach(g, '/dev/nbd3');
    await eventually('multi connections closed', () => exportStats(ctl, 'multi'), (s) => s?.connections === 0);
    // Read back over a single new connection: what the four wrote is in the store, not in a cache.
    await attach(g, '/dev/nbd3', 'multi');
    await g.sh('mount -o ro,noload /dev/nbd3 /mnt/multi');
    expect(await listChecksums(g, '/mnt/multi', bytes)).toEqual(written);
    await g.sh('umount /mnt/multi');
    await detach(g, '/dev/nbd3');
  }, SCENARIO_TIMEOUT_MS);

  // Run last: it restarts the server the other scenarios use.
  it('graceful server restart under a mounted, idle kernel client with -persist', async () => {
    const g = guest!;
    await attach(g, '/dev/nbd4', 'persist', '-persist');
    await g.sh('/sbin/mkfs.ext4 -q -F /dev/nbd4 && mkdir -p /mnt/p && mount -o noinit_itable /dev/nbd4 /mnt/p');
    const before = await writeRandomFiles(g, '/mnt/p', { f1: 20 });
    await g.sh('sync');

    expect(await server!.stop()).toBe(0);
    server = await startVmServer({ dataDir, args: serverArgs() });

    // What Linux 6.1 with nbd-client 3.24 does (README.md, "Server restarts"): in netlink mode
    // (the default) nbd-client configures the device and exits, so nothing is left to reconnect
    // (-persist is a no-op there); the kernel finds the connection dead at the next request and
    // fails it with EIO, and ext4 aborts its journal. (-nonetlink -persist stays resident, but
    // 6.1 returns 0 from NBD_DO_IT on a dropped connection and nbd-client 3.24 reads that as
    // "quit".) We assert that, then that nothing answered before the restart was lost.
    const next = await g.run('echo 3 > /proc/sys/vm/drop_caches; sha256sum /mnt/p/f1');
    expect(next.status).not.toBe(0);
    expect(next.output).toMatch(/I\/O error|Input\/output error/);
    expect(await g.sh('dmesg')).toMatch(/nbd4: (Dead connection|Receive control failed)/);

    // Recovery: unmount, detach, attach again (to the restarted server), and the data is all there.
    await g.run('umount /mnt/p');
    await g.run('nbd-client -d /dev/nbd4');
    await attach(g, '/dev/nbd4', 'persist');
    await g.sh('mount -o noinit_itable /dev/nbd4 /mnt/p');
    expect(await listChecksums(g, '/mnt/p')).toEqual(before);
    const more = await writeRandomFiles(g, '/mnt/p', { f2: 4 });
    await g.sh('sync');
    expect(await listChecksums(g, '/mnt/p')).toEqual({ ...before, ...more });
    await g.sh('umount /mnt/p');
    await detach(g, '/dev/nbd4');
  }, SCENARIO_TIMEOUT_MS);
});
