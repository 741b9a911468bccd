// Issue 20: one store, one server. A second `serve` on a data dir a server has open (by the same
// path, another --control and port, a symlink, a relative path from another directory) is refused
// naming the holder, and the first keeps serving unchanged data; `check` and `check --repair` are
// refused while it runs; after kill -9 the next start succeeds at once (the kernel freed the lock).
import { execFile } from 'node:child_process';
import { rmSync, symlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
/** A refused command exits at once; one that wrongly starts serving is killed after this. */
const REFUSAL_TIMEOUT_MS = 30_000;

interface Result { code: number | null; stdout: string; stderr: string }

async function snapnbd(args: string[], cwd?: string): Promise<Result> {
  try {
    const { stdout, stderr } = await run(process.execPath, [SNAPNBD_BIN, ...args], { timeout: REFUSAL_TIMEOUT_MS, ...(cwd ? { cwd } : {}) });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number | null; killed?: boolean; stdout: string; stderr: string };
    return { code: err.killed ? null : err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

const work = tempDir('snapnbd-issue20-');
afterAll(() => rmSync(work, { recursive: true, force: true }));

let servers: RunningServer[] = [];
afterEach(async () => {
  for (const s of servers) await s.stop();
  servers = [];
});

async function start(dataDir: string, args: string[] = []): Promise<RunningServer> {
  const s = await startServer({ dataDir, args });
  servers.push(s);
  return s;
}

/** The refusal names the store and the holder (PID, control socket, NBD listener) and suggests no flag. */
function expectRefusal(r: Result, dataDir: string, holder: RunningServer): void {
  expect(r.code).toBe(1);
  expect(r.stderr).toContain(dataDir);
  expect(r.stderr).toContain(`process ${holder.proc.pid}`);
  expect(r.stderr).toContain(`control socket ${holder.controlPath}`);
  expect(r.stderr).toContain(`nbd 127.0.0.1:${holder.port}`);
  expect(r.stderr).toContain('a store belongs to one process at a time');
  expect(r.stderr).not.toMatch(/--[a-z]/);
}

describe('one store, one server', () => {
  it('refuses a second serve on the same data dir however it is named; the first keeps serving unchanged data', async () => {
    const dir = join(work, 'a');
    const first = await start(dir, ['--volume', 'v=64M']);
    const c = await NbdTestClient.connect(first.port, 'v');
    await c.write(0, Buffer.alloc(8 * MiB, 0xaa), true);

    // The same path; another --control and port; a symlink; a relative path from elsewhere.
    const link = join(work, 'link-to-a');
    symlinkSync(dir, link);
    const attempts: [string[], string | undefined][] = [
      [['--data-dir', dir], undefined],
      [['--data-dir', `${dir}/`], undefined],
      [['--data-dir', dir, '--control', join(work, 'elsewhere.sock')], undefined],
      [['--data-dir', link, '--control', join(work, 'elsewhere2.sock')], undefined],
      [['--data-dir', `./${basename(dir)}`, '--control', join(work, 'elsewhere3.sock')], dirname(dir)],
    ];
    for (const [args, cwd] of attempts) {
      const r = await snapnbd(['serve', ...args, '--listen', '127.0.0.1:0', '--volume', 'w=16M'], cwd);
      expectRefusal(r, dir, first);
      expect(r.stdout).not.toContain('ready');
    }

    // The first server still serves the same data, and the refused ones created nothing.
    expect((await c.read(0, 8 * MiB)).equals(Buffer.alloc(8 * MiB, 0xaa))).toBe(true);
    await c.disconnect();
    const list = await snapnbd(['volume', 'list', '--json', '--control', first.controlPath]);
    expect((JSON.parse(list.stdout) as { volumes: { name: string }[] }).volumes.map((v) => v.name)).toEqual(['v']);
  });

  it('refuses check and check --repair while a server has the store open', async () => {
    const dir = join(work, 'b');
    const first = await start(dir, ['--volume', 'v=16M']);
    for (const extra of [[], ['--repair'], ['--json']]) {
      const r = await snapnbd(['check', '--data-dir', dir, ...extra]);
      expectRefusal(r, dir, first);
      expect(r.stdout).toBe('');
    }
    await first.stop();
    servers = [];
    const r = await snapnbd(['check', '--data-dir', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('clean');
  });

  it('the data-destroying sequence of the issue now fails at the second start', async () => {
    const dir = join(work, 'c');
    const first = await start(dir, ['--volume', 'v=64M']);
    const c = await NbdTestClient.connect(first.port, 'v');
    await c.write(0, Buffer.alloc(8 * MiB, 0xaa), true);
    await c.disconnect();
    // Following the old advice: the same data dir, its own control socket and port.
    const second = await snapnbd(['serve', '--data-dir', dir, '--control', join(work, 'c2.sock'), '--listen', '127.0.0.1:0']);
    expectRefusal(second, dir, first);
    await first.stop();
    servers = [];
    const again = await start(dir);
    const c2 = await NbdTestClient.connect(again.port, 'v');
    expect((await c2.read(0, 8 * MiB)).equals(Buffer.alloc(8 * MiB, 0xaa))).toBe(true);
    await c2.disconnect();
    await again.stop();
    servers = [];
    expect((await snapnbd(['check', '--data-dir', dir])).code).toBe(0);
  });

  it('after kill -9 the next server starts at once, without cleanup; two stores run side by side', async () => {
    const dir = join(work, 'd');
    const other = join(work, 'e');
    const first = await start(dir, ['--volume', 'v=16M']);
    const neighbour = await start(other, ['--volume', 'v=16M']); // another store: not blocked
    await first.kill();
    servers = servers.filter((s) => s !== first);
    const t0 = Date.now();
    const next = await start(dir);
    const startMs = Date.now() - t0;
    expect(next.port).toBeGreaterThan(0);
    expect(startMs).toBeLessThan(REFUSAL_TIMEOUT_MS); // no wait for a stale lock to expire
    // The neighbour was never affected.
    const c = await NbdTestClient.connect(neighbour.port, 'v');
    await c.disconnect();
  });
});
