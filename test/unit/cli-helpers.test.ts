// The CLI's shared steps (src/cli/command-line.ts, src/cli/control-session.ts): the parse/--help
// prologue, the VOLUME@SNAPSHOT argument, and one control client per command, closed however the
// command ends, its failures turned into exit statuses.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commandPrologue, HELP_OPTION, parseCommandLine, snapshotArg } from '../../src/cli/command-line.ts';
import { withControlClient } from '../../src/cli/control-session.ts';
import { runStreamCli } from '../../src/cli/stream-commands.ts';
import { UsageError } from '../../src/cli/usage.ts';
import { ControlCallError } from '../../src/control/client.ts';
import { captureCli } from '../helpers/capture-cli.ts';

const CONFIG = { allowPositionals: true, options: { size: { type: 'string' }, help: HELP_OPTION } } as const;

describe('commandPrologue', () => {
  it('prints the usage on --help and -h and ends with 0', async () => {
    for (const flag of ['--help', '-h']) {
      const r = await captureCli(async () => {
        const p = commandPrologue(['x', flag], CONFIG, 'USAGE TEXT\n', () => 99);
        return typeof p === 'number' ? p : -1;
      });
      expect(r).toEqual({ code: 0, out: 'USAGE TEXT\n', err: '' });
    }
  });

  it('hands a refused line to the command as one sentence, and ends with what it returns', async () => {
    const refused: string[] = [];
    const r = await captureCli(async () => {
      const p = commandPrologue(['--bogus'], CONFIG, 'USAGE\n', (m) => { refused.push(m); return 42; });
      return typeof p === 'number' ? p : -1;
    });
    expect(r).toEqual({ code: 42, out: '', err: '' });
    expect(refused).toEqual(["Unknown option '--bogus'"]);
  });

  it('returns the parsed line otherwise', () => {
    const p = commandPrologue(['vm1', '--size', '1M'], CONFIG, 'USAGE\n', () => 99);
    expect(p).toMatchObject({ values: { size: '1M' }, positionals: ['vm1'] });
  });

  it('parseCommandLine is strict and throws a UsageError', () => {
    expect(() => parseCommandLine(['--size'], CONFIG)).toThrow(new UsageError("Option '--size <value>' argument missing"));
    expect(() => parseCommandLine(['a'], { options: { help: HELP_OPTION } })).toThrow(UsageError);
  });
});

describe('snapshotArg', () => {
  it('splits VOLUME@SNAPSHOT at the first @ and refuses a missing part', () => {
    expect(snapshotArg('vm1@s1', 'x')).toEqual({ volume: 'vm1', snapshot: 's1' });
    expect(snapshotArg('vm1@s@2', 'x')).toEqual({ volume: 'vm1', snapshot: 's@2' });
    for (const bad of ['vm1', '@s1', 'vm1@', '@', '']) {
      expect(() => snapshotArg(bad, 'backup create')).toThrow(new UsageError(`backup create: '${bad}' is not VOLUME@SNAPSHOT`));
    }
  });
});

describe('withControlClient', () => {
  const dir = mkdtempSync(join(tmpdir(), 'snapnbd-cli-helpers-'));
  const path = join(dir, 'control.sock');
  let server: net.Server;
  /** The fake server's connections, and the requests it received (it never answers them). */
  const conns: { socket: net.Socket; closed: boolean }[] = [];
  let requests: string[] = [];
  /** Waits until `n` connections made from `since` on have all been closed by the client. */
  const closedSince = async (since: number, n: number): Promise<void> => {
    const done = (): boolean => conns.length === since + n && conns.slice(since).every((c) => c.closed);
    for (let i = 0; i < 200 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(conns.slice(since).map((c) => c.closed)).toEqual(Array<boolean>(n).fill(true));
  };

  beforeAll(async () => {
    server = net.createServer((s) => {
      const c = { socket: s, closed: false };
      conns.push(c);
      s.on('data', (d) => requests.push(d.toString()));
      s.on('close', () => { c.closed = true; });
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => server.listen(path, r));
  });
  afterAll(async () => {
    for (const c of conns) c.socket.destroy(); // left open only when a test failed
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('returns the body\'s status (none: 0) and closes the connection', async () => {
    const before = conns.length;
    expect(await withControlClient(path, async () => 7)).toBe(7);
    expect(await withControlClient(path, async () => undefined)).toBe(0);
    await closedSince(before, 2);
  });

  it('an unreachable socket: 3 and the path on stderr, the body never runs', async () => {
    let ran = false;
    const r = await captureCli(() => withControlClient(join(dir, 'none.sock'), async () => { ran = true; }));
    expect(r.code).toBe(3);
    expect(r.err).toBe(`snapnbd: cannot reach the control socket ${join(dir, 'none.sock')}: no such file (is the server running?)\n`);
    expect(ran).toBe(false);
  });

  it('a refusal: 1 with its code; a usage error: 2 pointing at the command\'s help; both close', async () => {
    const before = conns.length;
    let r = await captureCli(() => withControlClient(path, async () => {
      throw new ControlCallError(-32001, 'VOLUME_BUSY', 'in use', {});
    }));
    expect(r).toEqual({ code: 1, out: '', err: 'snapnbd: VOLUME_BUSY: in use\n' });
    r = await captureCli(() => withControlClient(path, async () => {
      throw new UsageError('x: bad');
    }, { help: 'snapnbd x --help' }));
    expect(r).toEqual({ code: 2, out: '', err: 'snapnbd: x: bad (see snapnbd x --help)\n' });
    await closedSince(before, 2);
  });

  it('rethrows anything else, and still closes', async () => {
    const before = conns.length;
    await expect(withControlClient(path, async () => {
      throw new TypeError('a bug');
    })).rejects.toThrow('a bug');
    await closedSince(before, 1);
  });

  it('a server that does not answer in time: unreachable, through the command\'s own failure mapping, and closed', async () => {
    const before = conns.length;
    requests = [];
    const seen: unknown[] = [];
    const started = Date.now();
    const code = await withControlClient(path, async (c) => {
      await c.call('server.health');
      return 0;
    }, { timeoutSeconds: 0.2, failure: (e) => { seen.push(e); return 3; } });
    expect(code).toBe(3);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    expect(String(seen[0])).toBe(`ControlUnreachableError: cannot reach the control socket ${path}: no answer within 0.2 s`);
    expect(requests.join('')).toContain('"server.health"');
    await closedSince(before, 1);
  }, 10_000);
});

describe('volume import -i FILE', () => {
  it('a FILE that cannot be opened: one line and exit 1, before the socket is tried', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'snapnbd-cli-import-'));
    try {
      const missing = join(dir, 'missing.stream');
      const r = await captureCli(() => runStreamCli(['volume', 'import', 'vm1', '-i', missing, '--control', join(dir, 'none.sock')]));
      expect(r).toEqual({ code: 1, out: '', err: `snapnbd: ENOENT: no such file or directory, open '${missing}'\n` });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
