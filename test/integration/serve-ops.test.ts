// Issue 16, running it as a service: `--log-format json` writes one JSON object per line, SIGHUP
// re-reads the --config file's log level without dropping a connection, and a bad file or a
// SIGHUP without --config never stops the server.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { requires } from '../helpers/requires.ts';
import { startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const WAIT_MS = 20_000;

async function waitFor(what: string, cond: () => boolean, stderr: () => string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr:\n${stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('serve as a service', () => {
  let server: RunningServer | null = null;
  afterEach(async () => {
    await server?.stop();
    server = null;
  });

  it('--log-format json: every stderr line is one JSON object with time, level, message', async () => {
    requires('nbdinfo');
    server = await startServer({ args: ['--volume', 'v=16M', '--log-level', 'info', '--log-format', 'json'] });
    await run('nbdinfo', [server.uri('v')]);
    const s = server;
    await waitFor('the connection log line', () => s.stderr().includes("export 'v'"), s.stderr);
    expect(await server.stop()).toBe(0);
    const lines = server.stderr().trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(3); // serving, the connection, SIGTERM
    for (const line of lines) {
      const o = JSON.parse(line) as Record<string, unknown>;
      expect(Object.keys(o).slice(0, 3)).toEqual(['time', 'level', 'message']);
      expect(new Date(o.time as string).toISOString()).toBe(o.time);
      expect(['error', 'warn', 'info', 'debug']).toContain(o.level);
    }
    expect(lines.some((l) => (JSON.parse(l) as { message: string }).message.startsWith('serving v'))).toBe(true);
    server = null;
  });

  it('SIGHUP re-reads the log level from --config, keeps connections, and survives a bad file', async () => {
    const dir = tempDir();
    const config = join(dir, 'snapnbd.conf');
    writeFileSync(config, '# /etc/default/snapnbd\nSNAPNBD_OPTS="--listen 0.0.0.0:10809"\nSNAPNBD_LOG_LEVEL=warn\n');
    server = await startServer({ args: ['--volume', 'v=16M', '--log-level', 'debug', '--config', config] });
    const s = server;
    // The file's warn beats --log-level debug: a connection logs nothing.
    const c = await NbdTestClient.connect(server.port, 'v');
    await c.write(0, Buffer.alloc(4096, 7));
    expect(server.stderr()).not.toContain("export 'v'");

    writeFileSync(config, 'SNAPNBD_LOG_LEVEL="info"\n');
    server.proc.kill('SIGHUP');
    await waitFor('the reload line', () => s.stderr().includes('reload: log level: warn -> info'), s.stderr);
    const c2 = await NbdTestClient.connect(server.port, 'v');
    await waitFor('an info line after the reload', () => s.stderr().includes("export 'v'"), s.stderr);
    // The first connection was never dropped.
    await c.write(4096, Buffer.alloc(4096, 8));
    expect((await c.read(4096, 4096))[0]).toBe(8);

    writeFileSync(config, 'SNAPNBD_LOG_LEVEL=loud\n');
    server.proc.kill('SIGHUP');
    await waitFor('the refused reload', () => s.stderr().includes('reload: log level: kept the current setting'), s.stderr);
    expect(server.stderr()).toContain("SNAPNBD_LOG_LEVEL 'loud' is not error, warn, info or debug");
    writeFileSync(config, 'this is not a setting\n');
    server.proc.kill('SIGHUP');
    await waitFor('the second refused reload', () => s.stderr().split('kept the current setting').length === 3, s.stderr);
    expect(server.stderr()).toContain(`${config}:1: not KEY=VALUE`);
    await c2.write(0, Buffer.alloc(512, 9));
    await c.disconnect();
    await c2.disconnect();
    expect(await server.stop()).toBe(0);
    server = null;
  });

  it('SIGHUP without --config re-reads the schedules and is harmless; a bad --config at start is refused', async () => {
    server = await startServer({ args: ['--volume', 'v=16M', '--log-level', 'info'] });
    const s = server;
    // Sent the moment 'ready' is read: the handler must already be there (SIGHUP kills by default).
    server.proc.kill('SIGHUP');
    // Without --config, TLS or access rules, what SIGHUP re-reads is the schedules file (none here).
    await waitFor('the SIGHUP line', () => s.stderr().includes('reload: schedules: 0 schedule(s) (0 added, 0 changed, 0 removed)'), s.stderr);
    const c = await NbdTestClient.connect(server.port, 'v');
    await c.disconnect();
    expect(await server.stop()).toBe(0);
    server = null;
    const dir = tempDir();
    writeFileSync(join(dir, 'bad.conf'), 'SNAPNBD_LOG_LEVEL=shouty\n');
    await expect(startServer({ args: ['--config', join(dir, 'bad.conf')] })).rejects.toThrow(/SNAPNBD_LOG_LEVEL 'shouty'/);
  });
});
