// Issue 16, schedules with --backup-to against a file:// target (no object store needed): each
// scheduled snapshot is backed up by the backup job code, this schedule's backups beyond
// keepBackups are deleted and a manual backup is not; a failing backup makes the run fail,
// `snapnbd health` degraded and the failure counter move, and removing the schedule heals it.
import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.ts';
import type { Schedule } from '../../src/schedule/schedule-file.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';
import { sleep, until } from '../helpers/until.ts';

const run = promisify(execFile);

interface BackupView { id: string; snapshot: string; state: string }

describe('schedules with --backup-to (file:// target)', () => {
  const good = tempDir('snapnbd-sched-target-');
  const badParent = tempDir('snapnbd-sched-bad-');
  const bad = join(badParent, 'not-a-dir');
  let server: RunningServer;
  let c: ControlClient;
  const schedule = async (id: string) => (await c.call<{ schedules: Schedule[] }>('schedule.list')).schedules.find((s) => s.id === id);

  beforeAll(async () => {
    writeFileSync(bad, 'a file where the target directory should be\n');
    server = await startServer({
      args: ['--volume', 'k=4M', '--backup-target', `t=file://${good}`, '--backup-target', `bad=file://${bad}`, '--metrics', '127.0.0.1:0'],
    });
    c = await ControlClient.connect(server.controlPath);
  });
  afterAll(async () => {
    c?.close();
    await server?.stop();
    rmSync(good, { recursive: true, force: true });
    rmSync(badParent, { recursive: true, force: true });
  });

  it('backs up each scheduled snapshot and keeps keepBackups of this schedule\'s backups, never a manual one', async () => {
    await c.call('snapshot.create', { volume: 'k', name: 'm' });
    const manual = await c.call<{ id: string }>('backup.create', { target: 't', volume: 'k', snapshot: 'm', wait: true });
    const s = await c.call<Schedule>('schedule.add', { volume: 'k', kind: 'every', every: '1s', keep: 2, backupTo: 't', keepBackups: 2 });
    expect(s).toMatchObject({ backupTo: 't', keepBackups: 2 });
    await until('backup retention at work', async () => ((await schedule(s.id))?.lastResult?.backupsDeleted ?? []).length > 0);
    const last = (await schedule(s.id))!.lastResult!;
    expect(last.ok).toBe(true);
    expect(last.backup).toMatch(/^\d{8}T\d{9}Z-[0-9a-f]{8}$/);
    await c.call('schedule.remove', { id: s.id });
    // A run in progress when the schedule went still ends, its backup and both retentions
    // included (however long that takes under load): then two scheduled backups and two
    // scheduled snapshots are left, the only steady state.
    const { backups, scheduled, snaps, autoSnaps } = await until('a run in progress ended', async () => {
      const bs = (await c.call<{ backups: BackupView[] }>('backup.list', { target: 't', volume: 'k' })).backups;
      const ss = (await c.call<{ snapshots: { name: string; backup?: string }[] }>('snapshot.list', { volume: 'k' })).snapshots;
      const state = {
        backups: bs, scheduled: bs.filter((b) => b.snapshot.startsWith(`auto-${s.id}-`)),
        snaps: ss, autoSnaps: ss.filter((x) => x.name.startsWith(`auto-${s.id}-`)).map((x) => x.name),
      };
      return state.scheduled.length === 2 && state.autoSnaps.length === 2 ? state : null;
    });
    expect(scheduled.every((b) => b.state === 'backed-up')).toBe(true);
    expect(backups.map((b) => b.id)).toContain(manual.id);
    // The two kept backups are of the two snapshots snapshot retention kept.
    expect(scheduled.map((b) => b.snapshot).sort()).toEqual(autoSnaps.sort());
    expect(snaps.find((x) => x.name === 'm')?.backup).toBe('backed-up');
  });

  it('a failing backup fails the run, degrades health and counts; removing the schedule heals', async () => {
    const s = await c.call<Schedule>('schedule.add', { volume: 'k', kind: 'every', every: '1s', keep: 1, backupTo: 'bad' });
    const failed = await until('a failed run', async () => {
      const r = (await schedule(s.id))?.lastResult;
      return r && !r.ok ? r : null;
    });
    expect(failed.snapshot).toMatch(/^auto-s2-/); // the snapshot itself was taken
    expect(failed.error).toMatch(/^backup of k@auto-s2-\S+ to 'bad': /);
    let health = await run(process.execPath, [SNAPNBD_BIN, 'health', '--control', server.controlPath]).then(
      (r) => ({ code: 0, out: r.stdout }), (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }));
    expect(health.code).toBe(1);
    expect(health.out.split('\n')[0]).toMatch(/^degraded: last_runs: last run failed: schedule s2 \(k\): backup of k@auto-s2-/);
    const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
    expect(Number(/^snapnbd_schedule_runs_total\{result="failed"\} (\d+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1);
    expect(text).toMatch(/^snapnbd_schedules_failing 1$/m);
    // Retried at the next slot, not in a loop: about one attempt a second. At least one retry
    // comes (however slow a run under load), and no more than one a second meanwhile.
    const failedRuns = async (): Promise<number> =>
      Number(/^snapnbd_schedule_runs_total\{result="failed"\} (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text())?.[1]);
    const before = Number(/^snapnbd_schedule_runs_total\{result="failed"\} (\d+)$/m.exec(text)?.[1]);
    const since = Date.now();
    await until('a retry', async () => (await failedRuns()) > before);
    await sleep(3000); // time for a tight loop to show
    const after = await failedRuns();
    const seconds = Math.ceil((Date.now() - since) / 1000);
    expect(after - before).toBeLessThanOrEqual(seconds + 1); // a tight loop would be hundreds
    await c.call('schedule.remove', { id: s.id });
    await sleep(500);
    health = await run(process.execPath, [SNAPNBD_BIN, 'health', '--control', server.controlPath]).then(
      (r) => ({ code: 0, out: r.stdout }), (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }));
    expect(health.code).toBe(0);
  });
});
