// The `snapnbd` command as a user runs it: help, usage errors, default volume, listeners,
// signals reaching the server process itself.
import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);

async function snapnbd(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [SNAPNBD_BIN, ...args]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('snapnbd command line', () => {
  let server: RunningServer | null = null;
  afterEach(async () => {
    await server?.stop();
    server = null;
  });

  it('prints complete usage for --help and serve --help', async () => {
    const top = await snapnbd(['--help']);
    expect(top.code).toBe(0);
    for (const word of ['serve', 'check', 'volume', 'snapshot', 'clone', 'stats']) expect(top.stdout).toContain(word);
    const serve = await snapnbd(['serve', '--help']);
    expect(serve.code).toBe(0);
    for (const flag of ['--data-dir', '--listen', '--volume', '--default-export', '--control', '--read-only', '--max-connections', '--log-level', '--metrics']) {
      expect(serve.stdout).toContain(flag);
    }
  });

  it.each([
    [['serve', '--no-such-flag']],
    [['serve', '--listen', 'nonsense']],
    [['serve', '--volume', 'vm1']],
    [['serve', '--volume', 'vm1=lots']],
    [['serve', '--max-connections', '-3']],
    [['serve', '--log-level', 'loud']],
    [['serve', '--metrics', 'unix:/tmp/m.sock']],
    [['serve', '--metrics', '9100']],
    [['frobnicate']],
    [[]],
  ])('refuses %j with one line and exit code 2', async (args) => {
    const r = await snapnbd(args);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('creates the default volume, serves it under its name and the empty name, and stops on SIGTERM with 0', async () => {
    requires('nbdinfo');
    const sock = join(tempDir(), 'nbd.sock');
    server = await startServer({ unixSocket: sock });
    const byName = await run('nbdinfo', ['--json', server.uri('default')]);
    const info = JSON.parse(byName.stdout) as { exports: { 'export-name': string; 'export-size': number }[] };
    expect(info.exports[0]!['export-size']).toBe(2 ** 30);
    const byEmpty = await run('nbdinfo', ['--size', server.uri('')]);
    expect(Number(byEmpty.stdout.trim())).toBe(2 ** 30);
    const overUnix = await run('nbdinfo', ['--size', `nbd+unix:///default?socket=${sock}`]);
    expect(Number(overUnix.stdout.trim())).toBe(2 ** 30);
    const code = await server.stop();
    server = null;
    expect(code).toBe(0);
    rmSync(sock, { force: true });
  });

  it('refuses connections beyond --max-connections and keeps serving', async () => {
    requires('nbdinfo');
    server = await startServer({ args: ['--volume', 'v=16M', '--max-connections', '1'] });
    const net = await import('node:net');
    const held = net.connect(server.port, '127.0.0.1');
    await new Promise((r) => held.once('data', r)); // the greeting: this connection counts
    await expect(run('nbdinfo', ['--size', server.uri('v')])).rejects.toThrow(/nbdinfo/);
    expect(server.stderr()).toMatch(/refused: at --max-connections 1/);
    held.destroy();
    // The slot is free once the server has seen the close: retry until then (generous limit).
    const deadline = Date.now() + 30_000;
    let ok: { stdout: string } | null = null;
    while (!ok) {
      ok = await run('nbdinfo', ['--size', server.uri('v')]).catch((e: unknown) => {
        if (Date.now() > deadline) throw e;
        return null;
      });
      if (!ok) await new Promise((r) => setTimeout(r, 20));
    }
    expect(Number(ok.stdout.trim())).toBe(16 * 2 ** 20);
  });

  it('keeps what was written across a graceful restart', async () => {
    requires('qemu-io');
    const dataDir = tempDir();
    server = await startServer({ dataDir, args: ['--volume', 'v=16M'] });
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 4096 8192', server.uri('v')]);
    expect(await server.stop()).toBe(0);
    server = await startServer({ dataDir, args: ['--volume', 'v=16M'] });
    const r = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 4096 8192', server.uri('v')]);
    expect(r.stdout).not.toContain('Pattern verification failed');
    expect(r.stdout).toContain('read 8192/8192');
    await server.stop();
    server = null;
    rmSync(dataDir, { recursive: true, force: true });
    expect(existsSync(dataDir)).toBe(false);
  });
});
