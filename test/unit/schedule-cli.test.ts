// Issue 16, schedules: what the control methods and the CLI refuse, and how. Bad params are
// INVALID_PARAMS naming the param, an unknown target INVALID_ARGUMENT, a server without a
// scheduler NOT_SUPPORTED; the CLI refuses a bad command line with exit 2 before connecting.
import { describe, expect, it } from 'vitest';
import { runScheduleCli } from '../../src/cli/schedule-commands.ts';
import { answerFrame } from '../../src/control/server.ts';
import type { ControlContext } from '../../src/control/methods.ts';
import { Scheduler } from '../../src/schedule/scheduler.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { captureCli } from '../helpers/capture-cli.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';
import { tempDir } from '../helpers/server.ts';

async function context(withScheduler: boolean): Promise<ControlContext> {
  const store = new FakeStore();
  const registry = new VolumeRegistry(store, { defaultExport: 'v', readOnly: false });
  await registry.createVolume({ name: 'v', size: 1024 * 1024 });
  const ctx: ControlContext = { registry, serverInfo: () => ({ version: '0', listeners: [], startedAt: new Date() }) };
  if (withScheduler) ctx.schedules = new Scheduler({ dataDir: tempDir('snapnbd-sched-cli-'), registry, manual: true });
  return ctx;
}

async function call(ctx: ControlContext, method: string, params: Record<string, unknown>): Promise<{ result?: unknown; error?: { code: number; data: { code: string; param?: string } } }> {
  const r = await answerFrame({ kind: 'line', text: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) }, ctx);
  return JSON.parse(JSON.stringify(r)) as never;
}

describe('schedule.* refusals', () => {
  it('names the bad param, the unknown target, the missing scheduler', async () => {
    const ctx = await context(true);
    const add = (p: Record<string, unknown>) => call(ctx, 'schedule.add', { volume: 'v', kind: 'daily', at: '02:00', keep: 3, ...p });
    expect((await add({ kind: 'yearly' })).error).toMatchObject({ code: -32602, data: { code: 'INVALID_PARAMS', param: 'kind' } });
    expect((await add({ keep: 0 })).error).toMatchObject({ code: -32602, data: { param: 'keep' } });
    expect((await add({ keep: 1e9 })).error).toMatchObject({ code: -32602, data: { param: 'keep' } });
    expect((await add({ every: '10m' })).error).toMatchObject({ code: -32602, data: { param: 'every' } });
    expect((await add({ kind: 'every', at: undefined, every: '0s' })).error).toMatchObject({ code: -32602, data: { param: 'every' } });
    expect((await add({ keepBackups: 3 })).error).toMatchObject({ code: -32602, data: { param: 'keepBackups' } });
    expect((await add({ at: 'x'.repeat(65) })).error).toMatchObject({ code: -32602, data: { param: 'at' } });
    expect((await add({ volume: 'bad@name' })).error).toMatchObject({ code: -32000, data: { code: 'INVALID_NAME' } });
    expect((await add({ backupTo: 'offsite' })).error).toMatchObject({ code: -32000, data: { code: 'INVALID_ARGUMENT' } });
    expect((await call(ctx, 'schedule.remove', { id: '../../etc' })).error).toMatchObject({ data: { code: 'SCHEDULE_NOT_FOUND' } });
    expect((await call(ctx, 'schedule.list', {})).result).toEqual({ schedules: [] });
    const none = await context(false);
    expect((await call(none, 'schedule.list', {})).error).toMatchObject({ code: -32000, data: { code: 'NOT_SUPPORTED' } });
  });
});

describe('snapnbd schedule (command line)', () => {
  const sock = ['--control', '/nonexistent/control.sock'];
  const cases: [string[], RegExp][] = [
    [['add', 'v', '--keep', '3'], /give one of --hourly, --daily, --weekly, --monthly, --every/],
    [['add', 'v', '--daily', '02:00', '--every', '1s', '--keep', '3'], /give one of/],
    [['add', 'v', '--daily', '02:00'], /--keep N is required/],
    [['add', 'v', '--daily', '02:00', '--keep', '0'], /--keep: '0' is not a whole number from 1/],
    [['add', 'v', '--daily', '02:00', '--keep', '3', '--keep-backups', '2'], /--keep-backups needs --backup-to/],
    [['add', '--daily', '02:00', '--keep', '3'], /expected VOLUME/],
    [['list', '--keep', '3'], /--keep applies to schedule add only/],
    [['remove'], /expected ID/],
    [['frobnicate'], /unknown subcommand 'frobnicate'/],
    [['add', 'v', '--daily'], /argument missing|--daily/],
  ];
  it.each(cases)('refuses %j with exit 2', async (args, message) => {
    const r = await captureCli(() => runScheduleCli([...args, ...sock]));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.err.trim().split('\n')).toHaveLength(1);
  });

  it('says when the server cannot be reached (exit 3)', async () => {
    const r = await captureCli(() => runScheduleCli(['list', ...sock]));
    expect(r.code).toBe(3);
    expect(r.err).toContain('/nonexistent/control.sock');
  });
});
