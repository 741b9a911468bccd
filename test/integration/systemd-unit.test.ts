// Issue 16, the service: contrib/systemd/snapnbd.service passes `systemd-analyze verify` (with
// ExecStart pointing at this checkout's bin/snapnbd, since the unit names the installed path),
// carries the hardening it promises, its /etc/default example holds options `serve` accepts, and
// the server reports readiness and stopping on NOTIFY_SOCKET as Type=notify needs (a datagram
// receiver stands in for systemd: this machine's PID 1 and the test VM's are not systemd).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { parseServeArgs } from '../../src/cli/serve.ts';
import { parseSettings } from '../../src/cli/settings-file.ts';
import { requires } from '../helpers/requires.ts';
import { REPO_ROOT, SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const UNIT = join(REPO_ROOT, 'contrib', 'systemd', 'snapnbd.service');
const DEFAULTS = join(REPO_ROOT, 'contrib', 'systemd', 'snapnbd.default');
const INSTALLED_BIN = '/usr/bin/snapnbd';

describe('contrib/systemd', () => {
  let receiver: ChildProcess | null = null;
  let server: RunningServer | null = null;
  afterEach(async () => {
    await server?.stop();
    server = null;
    receiver?.kill('SIGKILL');
    receiver = null;
  });

  it('the unit passes systemd-analyze verify with no complaint', async () => {
    requires('systemd-analyze');
    const dir = tempDir();
    const unit = readFileSync(UNIT, 'utf8');
    expect(unit).toContain(`ExecStart=${INSTALLED_BIN} serve`);
    writeFileSync(join(dir, 'snapnbd.service'), unit.replace(INSTALLED_BIN, SNAPNBD_BIN));
    const r = await run('systemd-analyze', ['verify', join(dir, 'snapnbd.service')]).catch((e: { code: number; stdout: string; stderr: string }) => e);
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect('code' in r ? r.code : 0).toBe(0);
  });

  it('the unit is hardened as documented and reloads with SIGHUP', () => {
    const directives = new Map<string, string>();
    for (const line of readFileSync(UNIT, 'utf8').split('\n')) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line);
      if (m) directives.set(m[1]!, m[2]!);
    }
    expect(Object.fromEntries(directives)).toMatchObject({
      Type: 'notify', NotifyAccess: 'all', User: 'snapnbd', StateDirectory: 'snapnbd',
      ProtectSystem: 'strict', ReadWritePaths: '/var/lib/snapnbd', NoNewPrivileges: 'true', PrivateTmp: 'true',
      CapabilityBoundingSet: '', ExecReload: '/bin/kill -HUP $MAINPID', EnvironmentFile: '-/etc/default/snapnbd',
    });
    expect(directives.get('ExecStart')).toContain('--data-dir /var/lib/snapnbd --config /etc/default/snapnbd');
  });

  it('the /etc/default example holds options serve accepts and a reloadable log level', () => {
    const settings = parseSettings(readFileSync(DEFAULTS, 'utf8'), DEFAULTS);
    expect(settings.get('SNAPNBD_LOG_LEVEL')).toBe('info');
    const opts = settings.get('SNAPNBD_OPTS')!.split(/\s+/);
    const config = parseServeArgs(['--data-dir', '/var/lib/snapnbd', '--config', '/etc/default/snapnbd', ...opts]);
    expect(config).toMatchObject({ metrics: { host: '127.0.0.1', port: 9100 }, listen: [{ kind: 'tcp', host: '0.0.0.0', port: 10809 }] });
  });

  it('tells NOTIFY_SOCKET READY=1 with a status once listening, and STOPPING=1 on SIGTERM', async () => {
    const dir = tempDir();
    const sock = join(dir, 'notify.sock');
    // systemd's side: a datagram socket; systemd-notify's barrier fd is closed by discarding it.
    receiver = spawn('/usr/bin/python3', ['-u', '-c', [
      'import socket, sys',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
      `s.bind(${JSON.stringify(sock)})`,
      'print("bound", flush=True)',
      'while True:',
      '    print(s.recv(4096).decode().replace("\\n", " | "), flush=True)',
    ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
    let got = '';
    receiver.stdout!.setEncoding('utf8').on('data', (d: string) => (got += d));
    const until = async (what: string): Promise<void> => {
      for (let i = 0; i < 400 && !got.includes(what); i++) await new Promise((r) => setTimeout(r, 50));
      expect(got).toContain(what);
    };
    await until('bound');
    server = await startServer({ args: ['--volume', 'v=16M'], env: { NOTIFY_SOCKET: sock } });
    await until('READY=1');
    expect(got).toMatch(/READY=1 \| STATUS=serving 1 export\(s\) on 127\.0\.0\.1:\d+/);
    expect(await server.stop()).toBe(0);
    server = null;
    await until('STOPPING=1');
  });
});
