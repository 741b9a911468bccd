// Issue 16, `snapnbd health` for monitors: exit 0 healthy, 1 degraded with the reason on the first
// line, 3 unreachable (no server, or one that does not answer in time), 2 usage.
import { execFile } from 'node:child_process';
import { mkdirSync, rmdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEALTH_PROBE_FILE } from '../../src/control/health.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);

async function health(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [SNAPNBD_BIN, 'health', ...args]);
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('snapnbd health', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer({ args: ['--volume', 'v=16M'] });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('is healthy (0) with a writable store and enough free space, one line per check', async () => {
    const r = await health('--control', server.controlPath);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('healthy');
    expect(lines.slice(1).map((l) => l.split(':')[0])).toEqual(['ok   store_writable', 'ok   free_space', 'ok   last_runs']);
    const json = await health('--data-dir', server.dataDir, '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ status: 'ok', checks: [{ name: 'store_writable', ok: true }, { name: 'free_space', ok: true }, { name: 'last_runs', ok: true }] });
  });

  it('is degraded (1) below the free-space minimum, saying why on the first line', async () => {
    const r = await health('--control', server.controlPath, '--min-free', '100');
    expect(r.code).toBe(1);
    expect(r.stdout.split('\n')[0]).toMatch(/^degraded: free_space: .* free of .* \(\d+\.\d%, minimum 100%\)$/);
  });

  it('is degraded (1) when the data dir does not take a write', async () => {
    // A directory where the probe file goes: opening it for writing fails as on a read-only disk.
    const probe = join(server.dataDir, HEALTH_PROBE_FILE);
    mkdirSync(probe);
    try {
      const r = await health('--control', server.controlPath);
      expect(r.code).toBe(1);
      expect(r.stdout.split('\n')[0]).toMatch(/^degraded: store_writable: .* does not take a write: EISDIR/);
    } finally {
      rmdirSync(probe);
    }
    expect((await health('--control', server.controlPath)).code).toBe(0);
  });

  it('is unreachable (3) without a server, or with one that never answers', async () => {
    const dir = tempDir();
    const none = await health('--control', join(dir, 'nothing.sock'));
    expect(none.code).toBe(3);
    expect(none.stdout).toMatch(/^unreachable: cannot reach the control socket/);
    const mute = net.createServer(() => { /* accepts, never answers */ });
    const path = join(dir, 'mute.sock');
    await new Promise<void>((r) => mute.listen(path, r));
    try {
      const t0 = Date.now();
      const hung = await health('--control', path, '--timeout', '1');
      expect(hung.code).toBe(3);
      expect(hung.stdout).toContain('no answer within 1 s');
      expect(Date.now() - t0).toBeLessThan(15_000);
    } finally {
      mute.close();
    }
  });

  it('refuses bad options with exit 2', async () => {
    for (const args of [['--min-free', 'lots'], ['--timeout', '-1'], ['--bogus'], ['extra']]) {
      const r = await health(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
  });
});
