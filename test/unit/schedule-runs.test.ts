// Issue 16, schedules: retention selection on plain data, and the scheduler's runs against the
// in-memory store with a pinned clock (no timer): retention keeps N of its own, never a manual
// or another schedule's snapshot; a snapshot held by a backup is skipped and reported; a run
// missed while stopped is taken once; a failure is reported, waits for the next slot and heals;
// schedules persist in schedules.json and a file that does not parse is refused, not overwritten.
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { planBackupRetention, planSnapshotRetention, scheduledSnapshotName, isScheduledBy } from '../../src/schedule/retention.ts';
import { readScheduleFile, SCHEDULE_FILE, ScheduleFileError } from '../../src/schedule/schedule-file.ts';
import { Scheduler, ScheduleError } from '../../src/schedule/scheduler.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';
import { tempDir } from '../helpers/server.ts';

const snap = (name: string, created: string, extra: { clones?: string[]; connections?: number } = {}) =>
  ({ name, created, clones: extra.clones ?? [], connections: extra.connections ?? 0 });

describe('schedule retention (pure)', () => {
  it('names snapshots after the schedule, unique, and recognises only its own', () => {
    const at = new Date('2026-11-30T10:45:07.123Z');
    expect(scheduledSnapshotName('s1', at, new Set())).toBe('auto-s1-20261130T104507Z');
    expect(scheduledSnapshotName('s1', at, new Set(['auto-s1-20261130T104507Z']))).toBe('auto-s1-20261130T104507Z-2');
    expect(isScheduledBy('s1', 'auto-s1-20261130T104507Z')).toBe(true);
    expect(isScheduledBy('s1', 'auto-s1-20261130T104507Z-2')).toBe(true);
    expect(isScheduledBy('s1', 'auto-s12-20261130T104507Z')).toBe(false);
    expect(isScheduledBy('s1', 'auto-s1-manual')).toBe(false);
    expect(isScheduledBy('s1', 'vm1-20261130T104507Z')).toBe(false);
  });

  it('deletes the oldest of its own beyond keep; skips clone origins and exported ones', () => {
    const list = [
      snap('auto-s1-20261130T100004Z', '2026-11-30T10:00:04Z'),
      snap('manual', '2026-11-30T09:00:00Z'),
      snap('auto-s1-20261130T100001Z', '2026-11-30T10:00:01Z'),
      snap('auto-s12-20261130T100000Z', '2026-11-30T10:00:00Z'),
      snap('auto-s1-20261130T100002Z', '2026-11-30T10:00:02Z', { clones: ['c1'] }),
      snap('auto-s1-20261130T100003Z', '2026-11-30T10:00:03Z', { connections: 1 }),
      snap('auto-s1-20261130T100000Z', '2026-11-30T10:00:00Z'),
      snap('auto-s1-20261130T100005Z', '2026-11-30T10:00:05Z'),
    ];
    const plan = planSnapshotRetention('s1', 2, list);
    expect(plan.delete).toEqual(['auto-s1-20261130T100000Z', 'auto-s1-20261130T100001Z']);
    expect(plan.skipped).toEqual([
      { name: 'auto-s1-20261130T100002Z', reason: 'origin of clone(s) c1' },
      { name: 'auto-s1-20261130T100003Z', reason: 'exported to 1 NBD connection(s)' },
    ]);
    expect(planSnapshotRetention('s1', 6, list)).toEqual({ delete: [], skipped: [] });
  });

  it('deletes only this server\'s finished backups of its own snapshots beyond keepBackups', () => {
    const b = (id: string, snapshot: string, created: string, source = 'me', state = 'backed-up') => ({ id, snapshot, created, source, state });
    const backups = [
      b('b3', 'auto-s1-20261130T100003Z', '2026-11-30T10:00:03Z'),
      b('b1', 'auto-s1-20261130T100001Z', '2026-11-30T10:00:01Z'),
      b('b0', 'manual', '2026-11-30T09:00:00Z'),
      b('b2', 'auto-s1-20261130T100002Z', '2026-11-30T10:00:02Z'),
      b('x1', 'auto-s1-20261130T100000Z', '2026-11-30T10:00:00Z', 'other-host'),
      b('r1', 'auto-s1-20261130T100004Z', '2026-11-30T10:00:04Z', 'me', 'backing-up'),
    ];
    expect(planBackupRetention('s1', 1, 'me', backups)).toEqual(['b1', 'b2']);
    expect(planBackupRetention('s1', 3, 'me', backups)).toEqual([]);
  });
});

/** A scheduler over the in-memory store, its clock in `clock.t`. */
async function setup(dataDir = tempDir('snapnbd-sched-')) {
  const store = new FakeStore();
  const registry = new VolumeRegistry(store, { defaultExport: 'v', readOnly: false });
  if (!store.volumes.has('v')) await registry.createVolume({ name: 'v', size: 1024 * 1024 });
  const clock = { t: Date.parse('2026-11-30T10:00:00.000Z') };
  const sch = new Scheduler({ dataDir, registry, now: () => clock.t, manual: true });
  await sch.start();
  const names = () => registry.listSnapshots('v').map((s) => s.name);
  return { store, registry, clock, sch, dataDir, names };
}

describe('scheduler runs (in-memory store, pinned clock)', () => {
  it('keeps N of its own snapshots, never a manual one', async () => {
    const { registry, clock, sch, names } = await setup();
    await registry.createSnapshot('v', 'manual', undefined);
    const s = await sch.add({ volume: 'v', kind: 'every', every: '10s', keep: 2 });
    expect(s).toMatchObject({ id: 's1', tz: 'UTC', nextRun: '2026-11-30T10:00:10.000Z' });
    for (let i = 1; i <= 4; i++) {
      clock.t += 10_000;
      await sch.runDue();
    }
    expect(names()).toEqual(['manual', 'auto-s1-20261130T100030Z', 'auto-s1-20261130T100040Z']);
    expect(sch.get('s1')).toMatchObject({ lastRun: '2026-11-30T10:00:40.000Z', nextRun: '2026-11-30T10:00:50.000Z',
      lastResult: { ok: true, snapshot: 'auto-s1-20261130T100040Z', deleted: ['auto-s1-20261130T100020Z'] } });
    expect(sch.stats()).toMatchObject({ schedules: 1, failing: 0, runs: { ok: 4, failed: 0 }, snapshotsDeleted: 2 });
    await sch.stop();
  });

  it('skips and reports a snapshot held by a backup (SNAPSHOT_BUSY), deletes it once free', async () => {
    const { registry, clock, sch, names } = await setup();
    await sch.add({ volume: 'v', kind: 'every', every: '10s', keep: 1 });
    clock.t += 10_000;
    await sch.runDue();
    const release = registry.holdSnapshot('v', 'auto-s1-20261130T100010Z', 'backup job j1');
    clock.t += 10_000;
    await sch.runDue();
    expect(names()).toEqual(['auto-s1-20261130T100010Z', 'auto-s1-20261130T100020Z']);
    const r = sch.get('s1').lastResult!;
    expect(r.ok).toBe(true);
    expect(r.skipped).toEqual([{ name: 'auto-s1-20261130T100010Z', reason: expect.stringContaining('backup job j1') }]);
    expect(sch.stats().retentionSkipped).toBe(1);
    release();
    clock.t += 10_000;
    await sch.runDue();
    expect(names()).toEqual(['auto-s1-20261130T100030Z']);
    await sch.stop();
  });

  it('takes a run missed while stopped once, then the next slot', async () => {
    const first = await setup();
    await first.sch.add({ volume: 'v', kind: 'hourly', at: ':15', keep: 10 });
    await first.sch.stop();
    // "Restart" five hours later over the same schedules file and store.
    const again = new Scheduler({ dataDir: first.dataDir, registry: first.registry, now: () => first.clock.t, manual: true });
    await again.start();
    first.clock.t = Date.parse('2026-11-30T15:00:00.000Z');
    await again.runDue();
    await again.runDue();
    expect(first.names()).toEqual(['auto-s1-20261130T150000Z']);
    expect(again.get('s1').nextRun).toBe('2026-11-30T15:15:00.000Z');
    await again.stop();
  });

  it('reports a failed run, waits for the next slot (no tight loop), heals when a run succeeds', async () => {
    const { store, clock, sch } = await setup();
    await sch.add({ volume: 'v', kind: 'every', every: '1m', keep: 3 });
    const real = store.createSnapshot.bind(store);
    store.createSnapshot = async () => { throw new Error('disk on fire'); };
    clock.t += 60_000;
    await sch.runDue();
    expect(sch.get('s1').lastResult).toEqual({ ok: false, error: 'snapshot of v: disk on fire' });
    expect(sch.failures()).toEqual(['schedule s1 (v): snapshot of v: disk on fire']);
    expect(sch.stats()).toMatchObject({ failing: 1, runs: { ok: 0, failed: 1 } });
    // Due again only a minute later: calling runDue at once runs nothing.
    const attempts: number[] = [];
    store.createSnapshot = async (...a) => { attempts.push(clock.t); return real(...a); };
    await sch.runDue();
    clock.t += 30_000;
    await sch.runDue();
    expect(attempts).toEqual([]);
    clock.t += 30_000;
    await sch.runDue();
    expect(attempts).toHaveLength(1);
    expect(sch.failures()).toEqual([]);
    await sch.stop();
  });

  it('persists schedules; removing a volume removes its schedules; a bad file is refused and left alone', async () => {
    const { sch, dataDir } = await setup();
    await sch.add({ volume: 'v', kind: 'daily', at: '02:30', tz: 'Europe/Paris', keep: 7 });
    await sch.add({ volume: 'v', kind: 'weekly', at: 'sun,03:00', keep: 4 });
    expect((await readScheduleFile(dataDir)).schedules.map((s) => s.id)).toEqual(['s1', 's2']);
    expect(readdirSync(dataDir)).toEqual([SCHEDULE_FILE]); // written through a temporary name, renamed
    expect(statSync(join(dataDir, SCHEDULE_FILE)).mode & 0o777).toBe(0o600);
    await sch.remove('s1');
    await expect(sch.remove('s1')).rejects.toMatchObject({ code: 'SCHEDULE_NOT_FOUND' });
    expect(await sch.removeVolume('v')).toEqual(['s2']);
    const content = await readScheduleFile(dataDir);
    expect(content).toEqual({ nextId: 3, schedules: [] });

    writeFileSync(join(dataDir, SCHEDULE_FILE), '{"format":1,"nextId":');
    await expect(readScheduleFile(dataDir)).rejects.toBeInstanceOf(ScheduleFileError);
    await expect(sch.reload()).rejects.toThrow(/not JSON/);
    expect(sch.failures()[0]).toMatch(/^schedules file: .*schedules\.json: not JSON/);
    await expect(sch.add({ volume: 'v', kind: 'daily', at: '02:30', keep: 1 })).rejects.toBeInstanceOf(ScheduleError);
    expect(readFileSync(join(dataDir, SCHEDULE_FILE), 'utf8')).toBe('{"format":1,"nextId":');
    await sch.stop();
  });
});
