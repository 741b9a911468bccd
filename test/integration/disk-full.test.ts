// Disk full, for real: the data dir on a size-limited tmpfs. A client writes until the file
// system is full: it gets ENOSPC (never EIO, never a dropped connection or a hung request);
// everything answered before reads back; FLUSH still works (the metadata reserve); the control
// socket and `snapnbd stats` say full; deleting a snapshot (a commit on the full disk) lets
// writes resume without a restart; after a restart everything answered is there and
// `snapnbd check` passes.
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.ts';
import { NbdErrno } from '../../src/protocol/constants.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const MiB = 2 ** 20;
/** Small enough to fill quickly, large enough for the store's metadata reserve (~36 MiB here). */
const FS_SIZE = '128m';
const BLOCK = MiB;
/** A request that does not answer in this long is a hang. */
const REQUEST_LIMIT_MS = 60_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function answered<T>(p: Promise<T>, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: no answer in ${REQUEST_LIMIT_MS} ms`)), REQUEST_LIMIT_MS); })])
    .finally(() => clearTimeout(t));
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('disk full on a real file system', () => {
  it('ENOSPC to the client, stats say full, a snapshot delete lets writes resume, check passes', async () => {
    const root = tempDir('snapnbd-full-');
    cleanups.push(() => rmSync(root, { recursive: true, force: true }));
    const dataDir = join(root, 'data');
    mkdirSync(dataDir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${FS_SIZE}`, 'tmpfs', dataDir]);
    cleanups.push(() => { execFileSync('umount', ['-l', dataDir]); });
    const args = ['--volume', 'v=512M'];
    let server: RunningServer = await startServer({ dataDir, args });
    cleanups.push(async () => { await server.stop(); });
    const ctl = await ControlClient.connect(server.controlPath);
    cleanups.push(() => ctl.close());
    const c = await NbdTestClient.connect(server.port, 'v');
    cleanups.push(() => c.destroy());

    const held = new Map<number, string>(); // offset -> sha of what was answered there
    const write = async (off: number): Promise<number> => {
      const data = randomBytes(BLOCK);
      try {
        await answered(c.write(off, data), `write at ${off}`);
        held.set(off, sha(data));
        return 0;
      } catch (e) {
        const errno = (e as { nbdErrno?: number }).nbdErrno;
        if (errno === undefined) throw e;
        return errno;
      }
    };

    // 24 MiB, a snapshot of it, then the same 24 MiB rewritten: the snapshot holds 24 MiB alone.
    for (let off = 0; off < 24 * MiB; off += BLOCK) expect(await write(off)).toBe(0);
    await ctl.call('snapshot.create', { volume: 'v', name: 'keep' });
    const snapHeld = new Map(held);
    for (let off = 0; off < 24 * MiB; off += BLOCK) expect(await write(off)).toBe(0);
    // Now fill the disk.
    let off = 24 * MiB;
    let errno = 0;
    while (off < 512 * MiB) {
      errno = await write(off);
      if (errno !== 0) break;
      off += BLOCK;
    }
    expect(errno, 'the write that found the disk full').toBe(NbdErrno.ENOSPC);
    const filled = off;
    console.log(`disk full after ${filled / MiB} MiB of volume written (tmpfs ${FS_SIZE})`);
    expect(filled).toBeGreaterThan(40 * MiB);
    // It stays full, with ENOSPC every time, and the connection lives; FLUSH still commits.
    for (let i = 0; i < 3; i++) expect(await write(filled + i * BLOCK)).toBe(NbdErrno.ENOSPC);
    await answered(c.flush(), 'flush on a full disk');
    expect(c.isOpen).toBe(true);
    const stats = await ctl.call<{ store: { full: boolean; freeBytes: number } }>('server.stats');
    expect(stats.store.full).toBe(true);
    const cli = await run(SNAPNBD_BIN, ['stats', '--control', server.controlPath]);
    expect(cli.stdout).toMatch(/FULL/);
    // Everything answered reads back.
    for (const [o, h] of held) expect(sha(await answered(c.read(o, BLOCK), `read at ${o}`)), `block at ${o}`).toBe(h);

    // Deleting the snapshot commits on the full disk and frees its 24 MiB: writes resume.
    await ctl.call('snapshot.delete', { volume: 'v', name: 'keep' });
    expect(snapHeld.size).toBe(24);
    // Segments that lost slots are cut in the background after the freeing commit
    // (segment-reclaim.ts): a write meanwhile takes the freed slots below the cut, or waits for
    // the cut before it grows another file. So every write after the delete succeeds at once.
    let resumed = 0;
    for (let i = 0; i < 8; i++) {
      expect(await write(filled + i * BLOCK), `write ${i} after the snapshot delete`).toBe(0);
      resumed++;
    }
    expect(resumed, 'writes after the snapshot delete').toBe(8);
    await answered(c.flush(), 'flush after resuming');
    expect((await ctl.call<{ store: { full: boolean } }>('server.stats')).store.full).toBe(false);

    // A restart keeps all of it, and the offline check is clean.
    await c.disconnect();
    ctl.close();
    expect(await server.stop()).toBe(0);
    const chk = await run(SNAPNBD_BIN, ['check', '--data-dir', dataDir]).catch((e: { code: number; stdout: string; stderr: string }) => e);
    expect(chk.stderr + chk.stdout).toMatch(/clean/);
    expect('code' in chk ? chk.code : 0, `check: ${chk.stdout}${chk.stderr}`).toBe(0);
    server = await startServer({ dataDir, args });
    const c2 = await NbdTestClient.connect(server.port, 'v');
    for (const [o, h] of held) expect(sha(await answered(c2.read(o, BLOCK), `read at ${o} after restart`)), `block at ${o} after restart`).toBe(h);
    await c2.disconnect();
  }, 300_000);
});
