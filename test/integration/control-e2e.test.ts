// End to end through the CLI (bin/snapnbd, its own process) and raw JSON against the real server
// and engine: data written over NBD, snapshots read back over NBD with nbdcopy, rollback (busy,
// forced), clones, diff, space given back, and bad input that changes nothing.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { rawControl, rpc } from '../helpers/control-raw.ts';
import { requires } from '../helpers/requires.ts';
import { runCli, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;
const VOL_SIZE = 16 * MiB;
const CHUNK = 64 * 1024;

const cli = runCli;

const work = mkdtempSync(join(tmpdir(), 'snapnbd-ctl-e2e-'));
// The control socket lives in a directory others may traverse, so that only its own mode keeps
// a non-owner out (the data dir itself is 0700).
const sockDir = mkdtempSync(join(tmpdir(), 'snapnbd-ctl-sock-'));
chmodSync(sockDir, 0o755);
const controlPath = join(sockDir, 'control.sock');

let server: RunningServer;
let ctl: ControlClient;

function nbdcopyOut(uri: string, file: string): Buffer {
  execFileSync('nbdcopy', [uri, file], { stdio: 'pipe', timeout: 60_000 });
  return readFileSync(file);
}

function qemuWrite(uri: string, pattern: number, offset: number, length: number): void {
  execFileSync('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} ${offset} ${length}`, uri], { stdio: 'pipe', timeout: 60_000 });
}

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  requires('nbdcopy', 'qemu-io', 'nbdinfo', 'setpriv');
  server = await startServer({ args: ['--volume', `vm1=${VOL_SIZE / MiB}M`, '--control', controlPath] });
  expect(server.controlPath).toBe(controlPath);
  ctl = await ControlClient.connect(controlPath);
});
afterAll(async () => {
  ctl?.close();
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
  rmSync(sockDir, { recursive: true, force: true });
});

describe('snapshots through the CLI, data through NBD', () => {
  const C = (): string[] => ['--control', controlPath];

  it('snapshot, overwrite, read VOLUME@SNAPSHOT, diff, rollback, clone', async () => {
    // A known image on the volume.
    const image = randomBytes(VOL_SIZE);
    writeFileSync(join(work, 'image.raw'), image);
    execFileSync('nbdcopy', [join(work, 'image.raw'), server.uri('vm1')], { stdio: 'pipe' });

    let r = await cli(['snapshot', 'create', 'vm1@s1', '--description', 'golden', ...C()]);
    expect(r.stderr).toBe('');
    expect(r).toMatchObject({ code: 0 });
    expect(r.stdout).toMatch(/^created snapshot vm1@s1 at \d{4}-\d\d-\d\dT/);

    // Overwrite two places: 4 KiB inside chunk 3, and 100 KiB from 5 MiB (chunks 80 and 81).
    qemuWrite(server.uri('vm1'), 0x5a, 3 * CHUNK + 4096, 4096);
    qemuWrite(server.uri('vm1'), 0x6b, 5 * MiB, 100 * 1024);
    const changed = Buffer.from(image);
    changed.fill(0x5a, 3 * CHUNK + 4096, 3 * CHUNK + 8192);
    changed.fill(0x6b, 5 * MiB, 5 * MiB + 100 * 1024);
    expect(nbdcopyOut(server.uri('vm1'), join(work, 'head.raw')).equals(changed)).toBe(true);

    // The snapshot export still reads as the image, and is listed by NBD_OPT_LIST.
    expect(nbdcopyOut(server.uri('vm1@s1'), join(work, 's1.raw')).equals(image)).toBe(true);
    const listing = execFileSync('nbdinfo', ['--list', '--json', server.uri()], { encoding: 'utf8' });
    const names = (JSON.parse(listing) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name']);
    expect(names).toEqual(expect.arrayContaining(['vm1', 'vm1@s1']));

    // diff lists exactly the changed chunks.
    r = await cli(['snapshot', 'diff', 'vm1@s1', '--json', ...C()]);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { extents: unknown }).extents).toEqual([
      { offset: 3 * CHUNK, length: CHUNK },
      { offset: 5 * MiB, length: 2 * CHUNK },
    ]);
    r = await cli(['snapshot', 'diff', 'vm1@s1', ...C()]);
    expect(r.stdout).toMatch(/^196608\s+65536$/m);
    expect(r.stdout).toMatch(/2 extents, 192 KiB changed between vm1@s1 and vm1 \(head\)/);

    // A second snapshot of the changed state, for later.
    expect((await cli(['snapshot', 'create', 'vm1@s2', ...C()])).code).toBe(0);

    // Rollback: refused while an NBD client holds the head; nothing changes.
    const holder = await NbdTestClient.connect(server.port, 'vm1');
    await waitFor('the connection to count', async () => (await ctl.call<{ connections: number }>('volume.info', { name: 'vm1' })).connections === 1);
    r = await cli(['snapshot', 'rollback', 'vm1@s1', ...C()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^snapnbd: VOLUME_BUSY: /);
    expect((await holder.read(3 * CHUNK + 4096, 4096)).equals(Buffer.alloc(4096, 0x5a))).toBe(true);
    expect(holder.isOpen).toBe(true);

    // A reader of the snapshot export does not block a rollback, and is not disconnected.
    const reader = await NbdTestClient.connect(server.port, 'vm1@s1');

    // Forced: the client is disconnected cleanly, then the head is the snapshot again.
    r = await cli(['snapshot', 'rollback', 'vm1@s1', '--force', ...C()]);
    expect(r).toMatchObject({ code: 0, stdout: 'rolled back vm1 to vm1@s1: discarded the head\'s changes since that snapshot (192 KiB); disconnected 1 NBD client\n' });
    await holder.closed;
    expect(holder.isOpen).toBe(false);
    expect(nbdcopyOut(server.uri('vm1'), join(work, 'head2.raw')).equals(image)).toBe(true);
    // Newer snapshots survive a rollback.
    expect(nbdcopyOut(server.uri('vm1@s2'), join(work, 's2.raw')).equals(changed)).toBe(true);
    expect(reader.isOpen).toBe(true);
    expect((await reader.read(0, 4096)).equals(image.subarray(0, 4096))).toBe(true);

    // Deleting an exported snapshot: SNAPSHOT_BUSY, and it stays.
    r = await cli(['snapshot', 'delete', 'vm1@s1', ...C()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^snapnbd: SNAPSHOT_BUSY: /);
    await reader.disconnect();

    // Clone, write to the clone: the origin and the snapshot are unchanged.
    r = await cli(['clone', 'vm1@s1', 'c1', ...C()]);
    expect(r).toMatchObject({ code: 0, stdout: `cloned vm1@s1 to volume c1 (16 MiB)\n` });
    expect(nbdcopyOut(server.uri('c1'), join(work, 'c1.raw')).equals(image)).toBe(true);
    qemuWrite(server.uri('c1'), 0x77, 0, MiB);
    const cloneImage = Buffer.from(image);
    cloneImage.fill(0x77, 0, MiB);
    expect(nbdcopyOut(server.uri('c1'), join(work, 'c1b.raw')).equals(cloneImage)).toBe(true);
    expect(nbdcopyOut(server.uri('vm1'), join(work, 'head3.raw')).equals(image)).toBe(true);
    expect(nbdcopyOut(server.uri('vm1@s1'), join(work, 's1b.raw')).equals(image)).toBe(true);
    r = await cli(['snapshot', 'info', 'vm1@s1', '--json', ...C()]);
    expect(JSON.parse(r.stdout)).toMatchObject({ volume: 'vm1', name: 's1', state: 'ready', description: 'golden', clones: ['c1'] });

    // The clone survives deletion of the snapshot it came from.
    expect((await cli(['snapshot', 'delete', 'vm1@s1', ...C()])).code).toBe(0);
    expect(nbdcopyOut(server.uri('c1'), join(work, 'c1c.raw')).equals(cloneImage)).toBe(true);
    r = await cli(['snapshot', 'list', 'vm1', '--json', ...C()]);
    expect((JSON.parse(r.stdout) as { snapshots: { name: string }[] }).snapshots.map((s) => s.name)).toEqual(['s2']);
  });

  it('generated names, --json as is, volume info, stats, and exit codes', async () => {
    const r1 = await cli(['snapshot', 'create', 'vm1', '--json', ...C()]);
    const s = JSON.parse(r1.stdout) as { name: string };
    expect(s.name).toMatch(/^vm1-\d{8}T\d{6}Z$/);
    const r2 = await cli(['snapshot', 'create', 'vm1', '--json', ...C()]);
    const s2 = JSON.parse(r2.stdout) as { name: string };
    // Within the same second the name takes a suffix; in a later second it is that second's stamp.
    if (s2.name.startsWith(s.name)) expect(s2.name).toBe(`${s.name}-2`);
    else {
      expect(s2.name).toMatch(/^vm1-\d{8}T\d{6}Z$/);
      expect(s2.name > s.name, `${s2.name} is later than ${s.name}`).toBe(true);
    }
    const direct = await ctl.call('volume.info', { name: 'vm1' });
    const viaCli = JSON.parse((await cli(['volume', 'info', 'vm1', '--json', '--data-dir', sockDir])).stdout) as unknown;
    expect(viaCli).toEqual(direct);
    const env = await cli(['volume', 'list'], { SNAPNBD_CONTROL: controlPath });
    expect(env.stdout).toMatch(/^vm1\s+16 MiB\s/m);
    const stats = await cli(['stats', ...C()]);
    expect(stats.stdout).toMatch(/^vm1\s+0\s+\d+\s/m);
    // The counters saw the traffic of the first test: nbdcopy wrote the whole volume, and read it back.
    const j = JSON.parse((await cli(['stats', '--json', ...C()])).stdout) as { exports: { name: string; bytesWritten: number; bytesRead: number; requests: number }[] };
    const vm1 = j.exports.find((e) => e.name === 'vm1')!;
    expect(vm1.bytesWritten).toBeGreaterThanOrEqual(VOL_SIZE);
    expect(vm1.bytesRead).toBeGreaterThanOrEqual(VOL_SIZE);
    expect(j.exports.find((e) => e.name === 'vm1@s2')!.bytesRead).toBeGreaterThanOrEqual(VOL_SIZE);
    const missing = await cli(['volume', 'list', '--control', join(work, 'none.sock')]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain(join(work, 'none.sock'));
    const usage = await cli(['snapshot', 'rollback', 'vm1', ...C()]);
    expect(usage.code).toBe(2);
    expect(usage.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('forced rollback under writes, and backing files', () => {
  it('a forced rollback while a client writes at QD32: the client is disconnected and the head is exactly the snapshot', async () => {
    await ctl.call('volume.create', { name: 'rb', size: 8 * MiB });
    const base = randomBytes(8 * MiB);
    const w = await NbdTestClient.connect(server.port, 'rb');
    await w.write(0, base);
    await ctl.call('snapshot.create', { volume: 'rb', name: 'base' });
    let answered = 0;
    let failed = 0;
    const writer = async (): Promise<void> => {
      while (w.isOpen) {
        try {
          await w.write(Math.floor(Math.random() * 2048) * 4096, Buffer.alloc(4096, 0xee));
          answered++;
        } catch {
          failed++;
        }
      }
    };
    const running = Array.from({ length: 32 }, () => writer());
    await waitFor('some writes', () => answered > 200);
    const r = await ctl.call<{ disconnected: number }>('snapshot.rollback', { volume: 'rb', name: 'base', force: true });
    expect(r.disconnected).toBe(1);
    await Promise.all(running);
    expect(w.isOpen).toBe(false);
    expect(nbdcopyOut(server.uri('rb'), join(work, 'rb.raw')).equals(base)).toBe(true);
    console.log(`forced rollback under load: ${answered} writes answered before the disconnect, ${failed} cut off`);
    await ctl.call('volume.delete', { name: 'rb', withSnapshots: true });
  });

  it('volume delete: VOLUME_BUSY while exported (head or snapshot), force disconnects and deletes', async () => {
    await ctl.call('volume.create', { name: 'gone', size: MiB });
    await ctl.call('snapshot.create', { volume: 'gone', name: 's' });
    const head = await NbdTestClient.connect(server.port, 'gone');
    const view = await NbdTestClient.connect(server.port, 'gone@s');
    let r = await cli(['volume', 'delete', 'gone', '--control', controlPath]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^snapnbd: VOLUME_BUSY: /);
    expect((await ctl.call<{ snapshots: number }>('volume.info', { name: 'gone' })).snapshots).toBe(1);
    r = await cli(['volume', 'delete', 'gone', '--force', '--with-snapshots', '--control', controlPath]);
    expect(r).toMatchObject({ code: 0, stdout: 'deleted volume gone and its 1 snapshot (s); disconnected 2 NBD clients\n' });
    await Promise.all([head.closed, view.closed]);
    await expect(ctl.call('volume.info', { name: 'gone' })).rejects.toMatchObject({ code: 'VOLUME_NOT_FOUND' });
    await expect(NbdTestClient.connect(server.port, 'gone')).rejects.toThrow(/refused/);
  });

  it('a volume on a backing file reads it, takes writes and snapshots, and never changes it', async () => {
    const file = join(work, 'backing.raw');
    const content = randomBytes(4 * MiB);
    writeFileSync(file, content);
    const r = await cli(['volume', 'create', 'img', '--backing', file, '--chunk-size', '16K', '--json', '--control', controlPath]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ name: 'img', size: 4 * MiB, chunkSize: 16384, backing: file });
    expect(nbdcopyOut(server.uri('img'), join(work, 'img1.raw')).equals(content)).toBe(true);
    await ctl.call('snapshot.create', { volume: 'img', name: 'pristine' });
    qemuWrite(server.uri('img'), 0x42, MiB, 16384);
    const changed = Buffer.from(content);
    changed.fill(0x42, MiB, MiB + 16384);
    expect(nbdcopyOut(server.uri('img'), join(work, 'img2.raw')).equals(changed)).toBe(true);
    expect(nbdcopyOut(server.uri('img@pristine'), join(work, 'img3.raw')).equals(content)).toBe(true);
    const diff = await ctl.call<{ extents: unknown[] }>('snapshot.diff', { volume: 'img', from: 'pristine' });
    expect(diff.extents).toEqual([{ offset: MiB, length: 16384 }]);
    expect(readFileSync(file).equals(content)).toBe(true);
    await ctl.call('volume.delete', { name: 'img', withSnapshots: true });
    expect(readFileSync(file).equals(content)).toBe(true);
  });
});

describe('many clients at once', () => {
  it('concurrent creates on one volume are serialised; generated names stay unique', async () => {
    const clients = await Promise.all(Array.from({ length: 16 }, () => ControlClient.connect(controlPath)));
    try {
      await ctl.call('volume.create', { name: 'busy', size: 4 * MiB });
      const made = await Promise.all(clients.flatMap((c, i) => [
        c.call<{ name: string }>('snapshot.create', { volume: 'busy', name: `n${i}` }),
        c.call<{ name: string }>('snapshot.create', { volume: 'busy' }),
      ]));
      const names = made.map((m) => m.name);
      expect(new Set(names).size).toBe(32);
      const list = await ctl.call<{ snapshots: { name: string; state: string }[] }>('snapshot.list', { volume: 'busy' });
      expect(list.snapshots.map((s) => s.name).sort()).toEqual([...names].sort());
      expect(list.snapshots.every((s) => s.state === 'ready')).toBe(true);
      // Deletes racing with creates of the same names: each call either wins or gets a clean code.
      const results = await Promise.all(clients.map((c, i) =>
        (i % 2 === 0 ? c.call('snapshot.delete', { volume: 'busy', name: `n${i}` }) : c.call('snapshot.create', { volume: 'busy', name: `n${i - 1}` }))
          .then(() => 'ok', (e: { code?: string }) => e.code ?? 'ERR')));
      expect(results.every((r) => r === 'ok' || r === 'NAME_TAKEN' || r === 'SNAPSHOT_NOT_FOUND')).toBe(true);
      await ctl.call('volume.delete', { name: 'busy', withSnapshots: true });
    } finally {
      for (const c of clients) c.close();
    }
  });
});

describe('space', () => {
  it('delete gives space back to the filesystem', async () => {
    // Its own server, so that nothing else shares the store's segment files.
    const own = await startServer({ args: ['--volume', 'small=1M'] });
    const c = await ControlClient.connect(own.controlPath);
    try {
      const C = ['--control', own.controlPath];
      const du = (): number => Number(execFileSync('du', ['-s', '-B1', own.dataDir], { encoding: 'utf8' }).split('\t')[0]);
      const stats = async (): Promise<{ allocatedBytes: number; liveBytes: number }> =>
        (await c.call<{ store: { allocatedBytes: number; liveBytes: number } }>('server.stats')).store;
      const before = await stats();
      const duBefore = du();
      expect((await cli(['volume', 'create', 'big', '--size', '32M', ...C])).code).toBe(0);
      writeFileSync(join(work, 'big.raw'), randomBytes(24 * MiB));
      execFileSync('nbdcopy', ['--flush', join(work, 'big.raw'), own.uri('big')], { stdio: 'pipe' });
      expect((await cli(['snapshot', 'create', 'big@keep', ...C])).code).toBe(0);
      qemuWrite(own.uri('big'), 0x11, 0, 8 * MiB); // the head's first 8 MiB are now copies
      const full = await stats();
      expect(full.liveBytes - before.liveBytes).toBe(32 * MiB);
      expect(du() - duBefore).toBeGreaterThanOrEqual(32 * MiB);
      const snap = JSON.parse((await cli(['snapshot', 'info', 'big@keep', '--json', ...C])).stdout) as { used: number; referenced: number };
      expect(snap).toMatchObject({ used: 8 * MiB, referenced: 24 * MiB });
      expect((await cli(['snapshot', 'delete', 'big@keep', ...C])).code).toBe(0);
      expect(full.liveBytes - (await stats()).liveBytes).toBe(8 * MiB);
      expect((await cli(['volume', 'delete', 'big', ...C])).code).toBe(0);
      expect((await stats()).liveBytes).toBe(before.liveBytes);
      await waitFor('space to return to the filesystem', () => du() < duBefore + MiB, 60_000);
    } finally {
      c.close();
      await own.stop();
    }
  });
});

describe('bad input changes nothing', () => {
  async function snapshotState(): Promise<string> {
    const vols = await ctl.call<{ volumes: { name: string }[] }>('volume.list');
    const snaps = await Promise.all(vols.volumes.map((v) => ctl.call<{ snapshots: { name: string }[] }>('snapshot.list', { volume: v.name })));
    return JSON.stringify([vols.volumes.map((v) => v.name), snaps.map((x) => x.snapshots.map((y) => y.name))]);
  }

  it('malformed JSON, wrong types, unknown methods and params, invalid names, huge lines', async () => {
    const before = await snapshotState();
    const c = await rawControl(controlPath);
    const other = await rawControl(controlPath);
    try {
      c.send('{"jsonrpc":"2.0","id":1,"method":"snapshot.create","params":{"volume":"vm1","name":"x"\n');
      expect(await c.next()).toMatchObject({ id: null, error: { code: -32700 } });
      c.send(rpc(2, 'snapshot.create', { volume: 'vm1', name: 7 }));
      expect(await c.next()).toMatchObject({ id: 2, error: { code: -32602, data: { code: 'INVALID_PARAMS', param: 'name' } } });
      c.send(rpc(3, 'snapshot.destroy', { volume: 'vm1', name: 'x' }));
      expect(await c.next()).toMatchObject({ id: 3, error: { code: -32601 } });
      c.send(rpc(4, 'snapshot.create', { volume: 'vm1', name: 'x', when: 'now' }));
      expect(await c.next()).toMatchObject({ id: 4, error: { code: -32602, data: { param: 'when' } } });
      for (const [i, bad] of ['a@b', '.dot', '-dash', 'x'.repeat(129), '', 'sp ace', 'sl/ash'].entries()) {
        c.send(rpc(10 + i, 'snapshot.create', { volume: 'vm1', name: bad }));
        expect(await c.next(), bad).toMatchObject({ id: 10 + i, error: { code: -32000, data: { code: 'INVALID_NAME' } } });
        c.send(rpc(20 + i, 'volume.create', { name: bad, size: MiB }));
        expect(await c.next(), bad).toMatchObject({ id: 20 + i, error: { code: -32000, data: { code: 'INVALID_NAME' } } });
      }
      c.send(rpc(30, 'volume.create', { name: 'odd', size: 1000 }));
      expect(await c.next()).toMatchObject({ id: 30, error: { code: -32000, data: { code: 'INVALID_ARGUMENT' } } });
      c.send(rpc(31, 'volume.create', { name: 'odd', size: MiB, chunkSize: 3000 }));
      expect(await c.next()).toMatchObject({ id: 31, error: { code: -32000, data: { code: 'INVALID_ARGUMENT' } } });
      c.send(rpc(32, 'snapshot.rollback', { volume: 'vm1', name: 'nope' }));
      expect(await c.next()).toMatchObject({ id: 32, error: { data: { code: 'SNAPSHOT_NOT_FOUND' } } });
      c.send(rpc(33, 'snapshot.create', { volume: 'nope' }));
      expect(await c.next()).toMatchObject({ id: 33, error: { data: { code: 'VOLUME_NOT_FOUND' } } });
      // 3 MiB on one line, in pieces; the other client is served meanwhile.
      const huge = `{"jsonrpc":"2.0","id":40,"method":"snapshot.create","params":{"volume":"vm1","name":"huge","description":"${'d'.repeat(3 * MiB)}"}}\n`;
      c.send(huge.slice(0, MiB));
      other.send(rpc('o1', 'volume.info', { name: 'vm1' }));
      expect(await other.next()).toMatchObject({ id: 'o1', result: { name: 'vm1' } });
      c.send(huge.slice(MiB));
      expect(await c.next()).toMatchObject({ id: null, error: { code: -32600, data: { code: 'LINE_TOO_LONG' } } });
      c.send(rpc(41, 'volume.info', { name: 'vm1' }));
      expect(await c.next()).toMatchObject({ id: 41, result: { name: 'vm1' } });
    } finally {
      c.close();
      other.close();
    }
    expect(await snapshotState()).toBe(before);
  });

  it('a non-owner cannot connect (EACCES), and the socket is 0600', async () => {
    const mode = execFileSync('stat', ['-c', '%a %F', controlPath], { encoding: 'utf8' }).trim();
    expect(mode).toBe('600 socket');
    // node itself is world-executable (a pyenv python may not be).
    const script = `const s = require('net').connect(process.argv[1]);
s.on('connect', () => { console.log('CONNECTED'); process.exit(0); });
s.on('error', (e) => { console.log(e.code); process.exit(0); });`;
    const asNobody = execFileSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '-e', script, controlPath], { encoding: 'utf8' }).trim();
    expect(asNobody).toBe('EACCES');
    // The directory is open to them (so it is the socket's own mode that stops them):
    const visible = execFileSync('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'sh', '-c', `test -S '${controlPath}' && echo yes`], { encoding: 'utf8' }).trim();
    expect(visible).toBe('yes');
    // And the owner still can.
    expect(await ctl.call('volume.info', { name: 'vm1' })).toMatchObject({ name: 'vm1' });
  });

  it('a second server on the same control socket refuses to start; the first keeps serving', async () => {
    const dataDir = tempDir();
    try {
      const second = startServer({ dataDir, args: ['--volume', 'x=1M', '--control', controlPath] });
      await expect(second).rejects.toThrow(/control socket .* in use/);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
    expect(await ctl.call('volume.info', { name: 'vm1' })).toMatchObject({ name: 'vm1' });
  });
});
