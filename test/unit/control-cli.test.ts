// The CLI's parsing, socket discovery, output and exit codes, in-process against a control
// socket backed by an in-memory store (the end-to-end CLI runs in test/integration).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { captureCli } from '../helpers/capture-cli.ts';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { runControlCli } from '../../src/cli/control-commands.ts';
import { controlSocketPath } from '../../src/cli/control-session.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';

const dir = mkdtempSync(join(tmpdir(), 'snapnbd-cli-unit-'));
let server: ControlServer;
let store: FakeStore;

beforeAll(async () => {
  store = new FakeStore();
  const registry = new VolumeRegistry(store, { defaultExport: 'vm1', readOnly: false, now: () => new Date('2026-11-22T10:15:00Z') });
  server = await startControlServer(join(dir, 'control.sock'), {
    registry, serverInfo: () => ({ version: '0.1.0', listeners: [], startedAt: new Date() }),
  });
});
afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  return captureCli(() => runControlCli(argv));
}

describe('socket discovery', () => {
  it('prefers --control, then --data-dir, then $SNAPNBD_CONTROL, then ./data', () => {
    expect(controlSocketPath({ control: '/a.sock', dataDir: '/d' }, { SNAPNBD_CONTROL: '/e' })).toBe('/a.sock');
    expect(controlSocketPath({ dataDir: '/d' }, { SNAPNBD_CONTROL: '/e' })).toBe('/d/control.sock');
    expect(controlSocketPath({}, { SNAPNBD_CONTROL: '/e.sock' })).toBe('/e.sock');
    expect(controlSocketPath({}, {})).toBe(resolve('data/control.sock'));
  });

  it('finds the socket through --data-dir and $SNAPNBD_CONTROL', async () => {
    expect((await cli('volume', 'list', '--data-dir', dir)).code).toBe(0);
    vi.stubEnv('SNAPNBD_CONTROL', server.path);
    try {
      expect((await cli('volume', 'list')).code).toBe(0);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe('commands', () => {
  const C = (): string[] => ['--control', server.path];

  it('creates, lists, snapshots, diffs, clones, rolls back and deletes', async () => {
    let r = await cli('volume', 'create', 'vm1', '--size', '1M', '--chunk-size', '64K', ...C());
    expect(r).toEqual({ code: 0, out: 'created volume vm1: 1 MiB, chunk size 64 KiB\n', err: '' });
    r = await cli('volume', 'list', ...C());
    expect(r.out.split('\n')[0]).toMatch(/^NAME\s+SIZE\s+USED/);
    expect(r.out).toMatch(/^vm1\s+1 MiB\s/m);
    await store.head('vm1').write(65536, Buffer.alloc(100, 1), { fua: false });
    r = await cli('snapshot', 'create', 'vm1@s1', '--description', 'first', ...C());
    expect(r.out).toMatch(/^created snapshot vm1@s1 at 2026-/);
    r = await cli('snapshot', 'create', 'vm1', ...C());
    expect(r.out).toMatch(/^created snapshot vm1@vm1-20261122T101500Z at /);
    await store.head('vm1').write(3 * 65536, Buffer.alloc(100, 2), { fua: false });
    await store.head('vm1').write(4 * 65536, Buffer.alloc(100, 2), { fua: false });
    r = await cli('snapshot', 'diff', 'vm1@s1', ...C(), '--json');
    expect(JSON.parse(r.out)).toEqual({ volume: 'vm1', from: 's1', to: null, extents: [{ offset: 196608, length: 131072 }], next: null });
    r = await cli('snapshot', 'diff', 'vm1@s1', 'vm1@vm1-20261122T101500Z', ...C());
    expect(r.out).toBe('OFFSET  LENGTH\n0 extents, 0 B changed between vm1@s1 and vm1@vm1-20261122T101500Z\n');
    r = await cli('snapshot', 'list', 'vm1', ...C());
    expect(r.out).toMatch(/^s1\s+2026-\S+Z\s+ready\s.*first$/m);
    r = await cli('snapshot', 'info', 'vm1@s1', ...C(), '--json');
    expect(JSON.parse(r.out)).toMatchObject({ volume: 'vm1', name: 's1', state: 'ready', description: 'first', clones: [] });
    r = await cli('clone', 'vm1@s1', 'c1', ...C());
    expect(r.out).toBe('cloned vm1@s1 to volume c1 (1 MiB)\n');
    r = await cli('snapshot', 'rollback', 'vm1@s1', ...C());
    expect(r).toMatchObject({ code: 0, out: 'rolled back vm1 to vm1@s1: discarded the head\'s changes since that snapshot (128 KiB)\n' });
    expect(store.headData('vm1').readUInt8(3 * 65536)).toBe(0);
    r = await cli('snapshot', 'delete', 'vm1@s1', ...C());
    expect(r.out).toMatch(/^deleted snapshot vm1@s1 \(taken 2026-\S+Z; 0 B only it held is freed\); clones kept: c1\n$/);
    r = await cli('stats', ...C());
    expect(r.out).toMatch(/^EXPORT\s+CONNS/);
    r = await cli('volume', 'delete', 'c1', ...C(), '--json');
    expect(JSON.parse(r.out)).toEqual({ name: 'c1', deleted: true, disconnected: 0, snapshots: [], clones: [] });
  });

  it('fetches every page of a long diff', async () => {
    expect((await cli('volume', 'create', 'pg', '--size', '16M', '--chunk-size', '4K', ...C())).code).toBe(0);
    expect((await cli('snapshot', 'create', 'pg@a', ...C())).code).toBe(0);
    for (let i = 0; i < 1500; i++) await store.head('pg').write(i * 8192, Buffer.alloc(16, 1), { fua: false });
    const r = await cli('snapshot', 'diff', 'pg@a', '--json', ...C());
    const d = JSON.parse(r.out) as { extents: { offset: number; length: number }[]; next: unknown };
    expect(d.next).toBeNull();
    expect(d.extents).toEqual(Array.from({ length: 1500 }, (_, i) => ({ offset: i * 8192, length: 4096 })));
  });

  it('exits 1 with the server\'s reason on stderr', async () => {
    const r = await cli('snapshot', 'info', 'vm1@nope', ...C());
    expect(r.code).toBe(1);
    expect(r.out).toBe('');
    expect(r.err).toBe("snapnbd: SNAPSHOT_NOT_FOUND: snapshot 'vm1@nope' not found\n");
    expect((await cli('volume', 'create', 'bad@', '--size', '1M', ...C())).err).toMatch(/^snapnbd: INVALID_NAME: /);
  });

  it.each([
    [['volume'], /missing subcommand/],
    [['volume', 'frob'], /unknown command 'volume frob'/],
    [['volume', 'create', 'x'], /--size is required/],
    [['volume', 'create', 'x', '--size', 'big'], /--size: 'big' is not a size/],
    [['volume', 'info'], /expected NAME, got none/],
    [['volume', 'list', '--force'], /option --force does not apply/],
    [['snapshot', 'info', 'vm1'], /'vm1' is not VOLUME@SNAPSHOT/],
    [['snapshot', 'diff', 'a@x', 'b@y'], /both snapshots must be of one volume/],
    [['clone', 'vm1@s1'], /expected VOLUME@NAME NEWVOLUME/],
    [['stats', '--bogus'], /Unknown option '--bogus'/],
    [[], /missing command/],
  ])('exits 2 on usage error %j with one line', async (argv, msg) => {
    const r = await cli(...argv, '--control', server.path);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(msg);
    expect(r.err.trim().split('\n')).toHaveLength(1);
  });

  it('exits 3 naming the path when the server cannot be reached', async () => {
    const path = join(dir, 'nobody.sock');
    const r = await cli('volume', 'list', '--control', path);
    expect(r.code).toBe(3);
    expect(r.err).toBe(`snapnbd: cannot reach the control socket ${path}: no such file (is the server running?)\n`);
  });
});
