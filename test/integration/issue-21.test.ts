// Issue 21: say what is wrong, never destroy by surprise. A volume whose backing image changed (or
// went missing) is kept and shown `unavailable: REASON` by the CLI, the socket and an NBD client's
// refusal (nbdinfo, qemu-img), other volumes are served, and `volume accept-backing` serves it
// again; deleting a volume with snapshots needs --with-snapshots and says what went; --volume
// NAME=SIZE over an existing volume of another size warns and changes nothing.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ControlCallError, ControlClient } from '../../src/control/client.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { requires } from '../helpers/requires.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

interface Result { code: number; stdout: string; stderr: string }

async function exec(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  try {
    const { stdout, stderr } = await run(cmd, args, { env: { ...process.env, ...env }, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout, stderr: err.stderr };
  }
}

const snapnbd = (args: string[]): Promise<Result> => exec(process.execPath, [SNAPNBD_BIN, ...args]);

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(ControlCallError);
  return (e as ControlCallError).code;
}

const work = tempDir('snapnbd-issue21-');
afterAll(() => rmSync(work, { recursive: true, force: true }));
let servers: RunningServer[] = [];
const clients: ControlClient[] = [];
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of servers.splice(0)) await s.stop();
});

async function start(dataDir: string, args: string[]): Promise<{ server: RunningServer; ctl: ControlClient; C: string[] }> {
  const server = await startServer({ dataDir, args });
  servers.push(server);
  const ctl = await ControlClient.connect(server.controlPath);
  clients.push(ctl);
  return { server, ctl, C: ['--control', server.controlPath] };
}

async function stop(server: RunningServer): Promise<void> {
  for (const c of clients.splice(0)) c.close();
  servers = servers.filter((s) => s !== server);
  const code = await server.stop();
  expect(code, server.stderr()).toBe(0);
}

interface VolumeJson { name: string; state: string; reason: string | null; size: number }
interface SnapshotJson { name: string; state: string; reason: string | null }

describe('a volume whose backing image changed', () => {
  it('is kept and shown unavailable with the reason everywhere; others are served; accept-backing serves it again', async () => {
    requires('nbdinfo', 'qemu-img');
    const dir = join(work, 'backing');
    const image = join(work, 'base.img');
    const content = randomBytes(4 * MiB);
    writeFileSync(image, content);
    let { server, ctl, C } = await start(dir, [image, '--volume', 'other=16M']);
    const c = await NbdTestClient.connect(server.port, 'base');
    await c.write(MiB, Buffer.alloc(64 * 1024, 0x42), true);
    await c.disconnect();
    await ctl.call('snapshot.create', { volume: 'base', name: 's1' });
    await stop(server);

    // Someone else changes the image: one byte, and its time stamp.
    const changed = Buffer.from(content);
    changed[3 * MiB] = changed[3 * MiB]! ^ 0xff;
    writeFileSync(image, changed);
    utimesSync(image, new Date('2020-02-02T00:00:00Z'), new Date('2020-02-02T00:00:00Z'));
    ({ server, ctl, C } = await start(dir, [image, '--volume', 'other=16M']));

    // Startup: an error naming the volume, the reason and the ways forward.
    await waitFor('the startup error', () => server.stderr().includes("volume 'base' is unavailable"));
    expect(server.stderr()).toMatch(/error volume 'base' is unavailable \(not served\): backing file .*base\.img changed since its volume was created \(mtime 2020-02-02T00:00:00Z != .*\); put the original file back .*'snapnbd volume accept-backing base' \(dangerous/);

    // The socket and the CLI say the same thing.
    const info = await ctl.call<VolumeJson>('volume.info', { name: 'base' });
    expect(info.state).toBe('unavailable');
    expect(info.reason).toMatch(/^backing file .*base\.img changed since its volume was created \(mtime 2020-02-02T00:00:00Z != /);
    const reason = info.reason!;
    const list = await ctl.call<{ volumes: VolumeJson[] }>('volume.list');
    // volume.list pages in name order (issue 19).
    expect(list.volumes.map((v) => [v.name, v.state, v.reason])).toEqual([['base', 'unavailable', reason], ['other', 'ready', null]]);
    const snaps = await ctl.call<{ snapshots: SnapshotJson[] }>('snapshot.list', { volume: 'base' });
    expect(snaps.snapshots.map((s) => [s.name, s.state, s.reason])).toEqual([['s1', 'unavailable', reason]]);
    const shown = `unavailable: ${reason}`;
    expect((await snapnbd(['volume', 'list', ...C])).stdout).toMatch(new RegExp(`^base .*${escape(shown)}$`, 'm'));
    expect((await snapnbd(['volume', 'list', ...C])).stdout).toMatch(/^other .*\sready$/m);
    expect((await snapnbd(['volume', 'info', 'base', ...C])).stdout).toContain(`state:       ${shown}\n`);
    expect((await snapnbd(['snapshot', 'list', 'base', ...C])).stdout).toMatch(new RegExp(`^s1 .*${escape(shown)}`, 'm'));
    expect((await snapnbd(['snapshot', 'info', 'base@s1', ...C])).stdout).toContain(`state:       ${shown}\n`);

    // NBD clients are told why (not "unknown export"); the other volume is served.
    const uri = server.uri('base');
    const plain = await exec('nbdinfo', [uri]);
    expect(plain.code).not.toBe(0);
    // libnbd 1.14 shows a server's error text only in its debug output.
    const debug = await exec('nbdinfo', [uri], { LIBNBD_DEBUG: '1' });
    expect(debug.code).not.toBe(0);
    expect(debug.stderr).toContain(`server error message: export 'base' is unavailable: ${reason}; put the original file back`);
    const snapDebug = await exec('nbdinfo', [server.uri('base@s1')], { LIBNBD_DEBUG: '1' });
    expect(snapDebug.stderr).toContain(`server error message: export 'base@s1' is unavailable: ${reason}`);
    const qemu = await exec('qemu-img', ['info', uri]);
    expect(qemu.code).not.toBe(0);
    expect(qemu.stderr).toContain(`export 'base' is unavailable: ${reason}`);
    expect(Number((await exec('nbdinfo', ['--size', server.uri('other')])).stdout.trim())).toBe(16 * MiB);

    // accept-backing: dangerous, explicit, says what it accepted; the volume is served again.
    const accepted = await snapnbd(['volume', 'accept-backing', 'base', ...C]);
    expect(accepted.code).toBe(0);
    expect(accepted.stdout).toBe(`volume base: accepted its backing file ${image} as it is now (it was refused because: ${reason}); state ready\n`);
    const again = await ctl.call<VolumeJson>('volume.info', { name: 'base' });
    expect([again.state, again.reason]).toEqual(['ready', null]);
    const r = await NbdTestClient.connect(server.port, 'base');
    expect((await r.read(MiB, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0x42))).toBe(true); // the overlay
    expect((await r.read(3 * MiB, 4096)).equals(changed.subarray(3 * MiB, 3 * MiB + 4096))).toBe(true); // the new image
    await r.disconnect();
    const ok = await snapnbd(['volume', 'accept-backing', 'base', ...C]);
    expect(ok.stdout).toBe(`volume base: its backing file ${image} was unchanged; nothing to accept\n`);
    await stop(server);

    // The new fingerprint is durable; the image never changed under us.
    ({ server, ctl, C } = await start(dir, [image]));
    expect((await ctl.call<VolumeJson>('volume.info', { name: 'base' })).state).toBe('ready');
    expect(readFileSync(image).equals(changed)).toBe(true);
    await stop(server);

    // Missing: unavailable saying so; nothing to accept.
    renameSync(image, `${image}.away`);
    ({ server, ctl, C } = await start(dir, ['--volume', 'other=16M']));
    const gone = await ctl.call<VolumeJson>('volume.info', { name: 'base' });
    expect(gone).toMatchObject({ state: 'unavailable', reason: `backing file ${image} is missing` });
    const refused = await snapnbd(['volume', 'accept-backing', 'base', ...C]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^snapnbd: BACKING_CHANGED: backing file .* is missing: there is nothing to accept/);
    expect(await codeOf(ctl.call('volume.acceptBacking', { name: 'other' }))).toBe('INVALID_ARGUMENT');
    // The third way forward: an unavailable volume can be deleted (its snapshot with it).
    const del = await snapnbd(['volume', 'delete', 'base', '--with-snapshots', ...C]);
    expect(del).toMatchObject({ code: 0, stdout: 'deleted volume base and its 1 snapshot (s1)\n' });
    expect(await codeOf(ctl.call('volume.info', { name: 'base' }))).toBe('VOLUME_NOT_FOUND');
    renameSync(`${image}.away`, image);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('guard rails', () => {
  it('deleting a volume with snapshots needs --with-snapshots, names what goes and what survives, and says what it destroyed', async () => {
    const { ctl, C } = await start(join(work, 'delete'), ['--volume', 'o=4M']);
    await ctl.call('snapshot.create', { volume: 'o', name: 's1' });
    await ctl.call('snapshot.create', { volume: 'o', name: 's2' });
    await ctl.call('volume.clone', { volume: 'o', snapshot: 's1', name: 'c1' });
    const refused = await snapnbd(['volume', 'delete', 'o', ...C]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe("snapnbd: VOLUME_HAS_SNAPSHOTS: volume 'o' has 2 snapshot(s) (s1, s2), which deleting it would delete too; " +
      'confirm with --with-snapshots (control: "withSnapshots": true); these clones would survive: c1 (from o@s1)\n');
    expect(await codeOf(ctl.call('volume.delete', { name: 'o', force: true }))).toBe('VOLUME_HAS_SNAPSHOTS');
    expect((await ctl.call<{ snapshots: number }>('volume.info', { name: 'o' })).snapshots).toBe(2);
    const done = await snapnbd(['volume', 'delete', 'o', '--with-snapshots', ...C]);
    expect(done).toMatchObject({ code: 0, stdout: 'deleted volume o and its 2 snapshots (s1, s2); clones kept: c1\n' });
    expect((await ctl.call<VolumeJson>('volume.info', { name: 'c1' })).state).toBe('ready');
    // Without snapshots no flag is needed, and the output says so.
    const plain = await snapnbd(['volume', 'delete', 'c1', ...C]);
    expect(plain).toMatchObject({ code: 0, stdout: 'deleted volume c1 (it had no snapshots)\n' });
  });

  it('--volume NAME=SIZE over an existing volume of another size warns naming both sizes and changes nothing', async () => {
    requires('nbdinfo');
    const dir = join(work, 'size');
    let { server } = await start(dir, ['--volume', 'vm1=1M']);
    await stop(server);
    ({ server } = await start(dir, ['--volume', 'vm1=2M']));
    await waitFor('the warning', () => server.stderr().includes('volume resize'));
    expect(server.stderr()).toContain("warn volume 'vm1' exists with 1 MiB (1048576 bytes); --volume asks for 2 MiB (2097152 bytes): " +
      'it is served as it is, nothing changed (to change its size: snapnbd volume resize vm1 SIZE)');
    expect(Number((await exec('nbdinfo', ['--size', server.uri('vm1')])).stdout.trim())).toBe(MiB);
  });
});
