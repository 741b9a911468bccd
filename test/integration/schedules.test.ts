// Issue 16, snapshot schedules against the real server: `--every 1s` schedules take snapshots,
// retention keeps N of them and never touches a manual one, an exported or cloned snapshot is
// kept and reported, schedules survive a restart and a run missed while the server was down is
// taken once, SIGHUP re-reads schedules.json, deleting a volume removes its schedules, and
// `volume info`, `schedule list` and /metrics show them.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runScheduleCli } from '../../src/cli/schedule-commands.ts';
import { runControlCli } from '../../src/cli/control-commands.ts';
import { ControlClient } from '../../src/control/client.ts';
import type { Schedule } from '../../src/schedule/schedule-file.ts';
import { captureCli } from '../helpers/capture-cli.ts';
import { RawClient } from '../helpers/raw-client.ts';
import { startServer, tempDir, type RunningServer } from '../helpers/server.ts';
import { sleep, until } from '../helpers/until.ts';


describe('snapshot schedules (real server)', () => {
  let server: RunningServer;
  let c: ControlClient;
  const snaps = async (volume: string): Promise<{ name: string; clones: string[] }[]> =>
    (await c.call<{ snapshots: { name: string; clones: string[] }[] }>('snapshot.list', { volume })).snapshots;
  const auto = async (volume: string, id: string) => (await snaps(volume)).map((s) => s.name).filter((n) => n.startsWith(`auto-${id}-`));
  const schedule = async (id: string) => (await c.call<{ schedules: Schedule[] }>('schedule.list')).schedules.find((s) => s.id === id);

  beforeAll(async () => {
    server = await startServer({ args: ['--volume', 'a=4M', '--volume', 'b=4M', '--volume', 'd=4M', '--metrics', '127.0.0.1:0'] });
    c = await ControlClient.connect(server.controlPath);
  });
  afterAll(async () => {
    c?.close();
    await server?.stop();
  });

  it('takes snapshots every second, keeps N of its own and never a manual one', async () => {
    await c.call('snapshot.create', { volume: 'a', name: 'manual' });
    const r = await captureCli(() => runScheduleCli(['add', 'a', '--every', '1s', '--keep', '3', '--control', server.controlPath]));
    expect(r.err).toBe('');
    expect(r.out).toMatch(/^added schedule s1: a every 1s, keep 3; next run \S+Z\n$/);
    // The first run's snapshot: retention deletes it once three newer ones are taken.
    const [first] = await until('a first snapshot', async () => { const n = await auto('a', 's1'); return n.length ? n : null; });
    // Five runs or more (retention has deleted some, the first run's among them: four runs at
    // least, however slow the runs under load), then stop the schedule and count.
    await until('five runs', async () => {
      const s = await schedule('s1');
      return s?.lastRun !== undefined && Date.parse(s.lastRun) - Date.parse(s.created) >= 5000 && !(await auto('a', 's1')).includes(first!);
    });
    const info = await captureCli(() => runControlCli(['volume', 'info', 'a', '--control', server.controlPath]));
    expect(info.out).toMatch(/schedules:\nID +VOLUME +WHEN +KEEP .*\ns1 +a +every 1s +3 +- +\S+Z +\S+Z ok auto-s1-\d{8}T\d{6}Z/);
    const removed = await captureCli(() => runScheduleCli(['remove', 's1', '--control', server.controlPath]));
    expect(removed.out).toBe('removed schedule s1 (its snapshots are kept)\n');
    // A run in progress when the schedule went still ends, its retention included: between its
    // snapshot and its retention the volume has four of them (however long that takes under load).
    const names = await until('a run in progress ended', async () => {
      const n = (await snaps('a')).map((s) => s.name);
      return n.length === 4 ? n : null;
    });
    expect(names[0]).toBe('manual');
    expect(names.slice(1)).toHaveLength(3);
    for (const n of names.slice(1)) expect(n).toMatch(/^auto-s1-\d{8}T\d{6}Z$/);
    // The survivors are the newest: the oldest were deleted first, and the last run deleted one.
    const last = (await c.call<{ schedules: Schedule[] }>('schedule.list')).schedules;
    expect(last).toEqual([]);
    const newest = names[3]!;
    const stamp = (n: string): string => n.slice('auto-s1-'.length);
    expect(stamp(names[1]!) < stamp(names[2]!) && stamp(names[2]!) < stamp(newest)).toBe(true);
    // Not the first runs' (kept N, oldest deleted).
    expect(names).not.toContain(first);
    expect(stamp(first!) < stamp(names[1]!)).toBe(true);
  });

  it('keeps and reports a snapshot that is exported or the origin of a clone; deletes it once free', async () => {
    // keep 3: the second snapshot must still exist when the test clones it, two runs later under load.
    const s = await c.call<Schedule>('schedule.add', { volume: 'b', kind: 'every', every: '1s', keep: 3 });
    const [first] = await until('a first snapshot', async () => { const n = await auto('b', s.id); return n.length ? n : null; });
    const nbd = await RawClient.connect(server.port);
    try {
      await nbd.handshake();
      await nbd.go(`b@${first!}`);
      // The newest other snapshot, cloned before retention takes it: on a loaded machine several runs
      // can pass between the listing and the clone, so a name deleted meanwhile is picked again.
      const second = await until('a second snapshot, cloned', async () => {
        const name = (await auto('b', s.id)).filter((n) => n !== first).at(-1);
        if (name === undefined) return null;
        try {
          await c.call('volume.clone', { volume: 'b', snapshot: name, name: 'b-clone' });
          return name;
        } catch (e) {
          if ((e as { code?: string }).code === 'SNAPSHOT_NOT_FOUND') return null;
          throw e;
        }
      });
      const last = await until('a run that skipped both', async () => {
        const r = (await schedule(s.id))?.lastResult;
        return r?.skipped?.length === 2 ? r : null;
      });
      expect(last.ok).toBe(true);
      expect(last.skipped).toEqual([
        { name: first, reason: 'exported to 1 NBD connection(s)' },
        { name: second, reason: 'origin of clone(s) b-clone' },
      ]);
      expect(await auto('b', s.id)).toEqual(expect.arrayContaining([first, second]));
    } finally {
      nbd.socket.destroy();
    }
    await until('the exported one deleted once its client left', async () => !(await auto('b', s.id)).includes(first!));
    expect(await auto('b', s.id)).toContain((await snaps('b')).find((x) => x.clones.length > 0)!.name);
    await c.call('schedule.remove', { id: s.id });
  });

  it('re-reads schedules.json on SIGHUP; deleting a volume removes its schedules', async () => {
    const s = await c.call<Schedule>('schedule.add', { volume: 'd', kind: 'daily', at: '02:30', tz: 'Europe/Paris', keep: 7 });
    const path = join(server.dataDir, 'schedules.json');
    const doc = JSON.parse(readFileSync(path, 'utf8')) as { schedules: Schedule[] };
    doc.schedules.find((x) => x.id === s.id)!.keep = 9;
    writeFileSync(path, JSON.stringify({ ...doc, format: 1 }));
    server.proc.kill('SIGHUP');
    await until('the reloaded keep', async () => (await schedule(s.id))?.keep === 9);
    await c.call('volume.delete', { name: 'd' });
    expect((await c.call<{ schedules: Schedule[] }>('schedule.list', { volume: 'd' })).schedules).toEqual([]);
    expect(readFileSync(path, 'utf8')).not.toContain('"volume": "d"');
  });

  it('counts runs in /metrics', async () => {
    const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
    const ok = /^snapnbd_schedule_runs_total\{result="ok"\} (\d+)$/m.exec(text);
    expect(Number(ok?.[1])).toBeGreaterThanOrEqual(5);
    expect(text).toMatch(/^snapnbd_schedule_runs_total\{result="failed"\} 0$/m);
    expect(text).toMatch(/^snapnbd_schedule_retention_skipped_total [1-9]\d*$/m);
    expect(text).toMatch(/^snapnbd_schedule_snapshots_deleted_total [1-9]\d*$/m);
  });
});

describe('schedules across a restart', () => {
  const dataDir = tempDir('snapnbd-sched-restart-');
  let server: RunningServer | null = null;
  afterAll(async () => {
    await server?.stop();
  });

  it('keeps its schedules and takes a run missed while down once, at start', async () => {
    server = await startServer({ dataDir, args: ['--volume', 'r=4M'] });
    let c = await ControlClient.connect(server.controlPath);
    const minute = (new Date().getUTCMinutes() + 30) % 60; // not due during this test
    const s = await c.call<Schedule>('schedule.add', { volume: 'r', kind: 'hourly', at: `:${String(minute).padStart(2, '0')}`, keep: 5 });
    c.close();
    await server.stop();
    server = null;
    // While it was down, three hourly slots went by.
    const path = join(dataDir, 'schedules.json');
    const doc = JSON.parse(readFileSync(path, 'utf8')) as { schedules: Schedule[] };
    doc.schedules[0]!.nextRun = new Date(Date.now() - 3 * 3_600_000).toISOString();
    writeFileSync(path, JSON.stringify(doc));
    server = await startServer({ dataDir, args: ['--volume', 'r=4M'] });
    c = await ControlClient.connect(server.controlPath);
    try {
      const list = (await c.call<{ schedules: Schedule[] }>('schedule.list')).schedules;
      expect(list.map((x) => [x.id, x.volume, x.kind, x.at, x.keep])).toEqual([[s.id, 'r', 'hourly', s.at, 5]]);
      await until('the missed run', async () => (await c.call<{ schedules: Schedule[] }>('schedule.list')).schedules[0]?.lastResult);
      await sleep(1500); // time for a second run, which must not come
      const names = (await c.call<{ snapshots: { name: string }[] }>('snapshot.list', { volume: 'r' })).snapshots.map((x) => x.name);
      expect(names).toHaveLength(1);
      expect(names[0]).toMatch(/^auto-s1-\d{8}T\d{6}Z$/);
      const after = (await c.call<{ schedules: Schedule[] }>('schedule.list')).schedules[0]!;
      expect(Date.parse(after.nextRun)).toBeGreaterThan(Date.now());
      expect(new Date(after.nextRun).getUTCMinutes()).toBe(minute);
      expect(after.lastResult).toEqual({ ok: true, snapshot: names[0] });
      // Its snapshots are kept when the schedule goes; the id is not reused.
      await c.call('schedule.remove', { id: 's1' });
      const again = await c.call<Schedule>('schedule.add', { volume: 'r', kind: 'every', every: '1h', keep: 1 });
      expect(again.id).toBe('s2');
    } finally {
      c.close();
    }
  });
});
