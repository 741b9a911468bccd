// The console's newer panels, their pure pieces and the server side that feeds them: the space
// history (ring, file, damaged file, deleted volumes), the chart's geometry, schedule params and
// texts in the schedule.* contract's shapes, sizes that end in zeros, and the watch's state
// (clients with their TLS identity grouped per volume; backup lists read seldom).
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { chartGeometry, roundUpBytes } from '../../src/http/console/browser/chart.ts';
import { lastRunText, scheduleParams, scheduleText } from '../../src/http/console/browser/schedule-text.ts';
import { formatSize as browserFormatSize } from '../../src/http/console/browser/text.ts';
import type { ScheduleRow } from '../../src/http/console/wire.d.ts';
import { gatherState, ConsoleWatch } from '../../src/http/console/watch.ts';
import type { ControlContext } from '../../src/control/methods.ts';
import { formatSize } from '../../src/util/size.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { HISTORY_FILE, HISTORY_SAMPLES_MAX, SpaceHistory, encodeHistoryFile, parseHistoryFile, type SpaceFigures } from '../../src/volumes/space-history.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';
import { parseServeArgs, type ServeConfig } from '../../src/cli/serve.ts';

const MiB = 1024 * 1024;

describe('space history', () => {
  const dir = (): string => mkdtempSync(join(tmpdir(), 'snapnbd-history-'));
  let clock = Date.parse('2026-11-30T10:00:00Z');
  const now = (): Date => new Date(clock);

  it('keeps a bounded ring per volume, forgets deleted volumes, and survives a restart', () => {
    const d = dir();
    let figures: SpaceFigures[] = [{ name: 'a', used: 1, referenced: 2, written: 3 }, { name: 'b', used: 0, referenced: 0, written: 0 }];
    const h = new SpaceHistory({ dataDir: d, intervalSeconds: 60, figures: () => figures, now });
    for (let i = 0; i < HISTORY_SAMPLES_MAX + 5; i++) {
      figures[0]!.used = i;
      h.sample();
      clock += 60_000;
    }
    const a = h.history('a');
    expect(a.intervalSeconds).toBe(60);
    expect(a.samples).toHaveLength(HISTORY_SAMPLES_MAX);
    expect(a.samples[0]!.used).toBe(5); // the oldest five went
    expect(a.samples[a.samples.length - 1]).toEqual({ at: new Date(clock - 60_000).toISOString(), used: HISTORY_SAMPLES_MAX + 4, referenced: 2, written: 3 });
    figures = figures.slice(0, 1); // b deleted
    h.sample();
    expect(h.history('b').samples).toEqual([]);
    // A new server on the same data dir reads what was kept.
    const again = new SpaceHistory({ dataDir: d, intervalSeconds: 60, figures: () => figures, now });
    expect(again.history('a').samples).toEqual(h.history('a').samples);
    expect(again.history('b').samples).toEqual([]);
    expect(again.history('nope')).toEqual({ volume: 'nope', intervalSeconds: 60, samples: [] });
  });

  it('sets a damaged file aside and starts again; drops malformed samples', () => {
    const d = dir();
    writeFileSync(join(d, HISTORY_FILE), '{"version":1,"volumes":');
    const h = new SpaceHistory({ dataDir: d, intervalSeconds: 60, figures: () => [{ name: 'a', used: 1, referenced: 1, written: 1 }], now });
    expect(existsSync(join(d, `${HISTORY_FILE}.damaged`))).toBe(true);
    expect(h.history('a').samples).toEqual([]);
    h.sample();
    expect(parseHistoryFile(readFileSync(join(d, HISTORY_FILE), 'utf8'))?.get('a')).toHaveLength(1);
    expect(parseHistoryFile('[]')).toBeNull();
    expect(parseHistoryFile('{"version":2,"volumes":{}}')).toBeNull();
    expect(parseHistoryFile('{"version":1,"volumes":{"a":[[1,2,3,4],[1,-2,3,4],"x",[1,2,3]]}}')?.get('a'))
      .toEqual([{ at: '1970-01-01T00:00:01.000Z', used: 2, referenced: 3, written: 4 }]);
    const rings = new Map([['a', [{ at: '2026-11-30T10:00:00.000Z', used: 5, referenced: 6, written: 7 }]]]);
    expect(parseHistoryFile(encodeHistoryFile(rings))).toEqual(rings);
  });
});

describe('serve --history-interval', () => {
  const interval = (args: string[]): number => (parseServeArgs(['--data-dir', '/tmp/x', ...args]) as ServeConfig).historyIntervalS;
  it('defaults to 300 s and takes 1 s to a day; anything else is a usage error', () => {
    expect(interval([])).toBe(300);
    expect(interval(['--history-interval', '1'])).toBe(1);
    expect(interval(['--history-interval', '86400'])).toBe(86400);
    expect(() => interval(['--history-interval', '0'])).toThrow(/--history-interval: 0 is not between 1 and 86400 seconds/);
    expect(() => interval(['--history-interval', '86401'])).toThrow(/not between/);
    expect(() => interval(['--history-interval', '1m'])).toThrow(/--history-interval: '1m' is not a whole number/);
  });
});

describe('the history chart', () => {
  it('scales to a round size and puts one point per sample', () => {
    expect(roundUpBytes(0)).toBe(1);
    expect(roundUpBytes(96 * MiB)).toBe(100 * MiB);
    expect(roundUpBytes(3 * 1024)).toBe(5 * 1024);
    expect(roundUpBytes(1000)).toBe(1000);
    const samples = [
      { at: '2026-11-30T10:00:00Z', used: 0, referenced: 0, written: 0 },
      { at: '2026-11-30T10:01:00Z', used: 50 * MiB, referenced: 100 * MiB, written: 10 * MiB },
      { at: '2026-11-30T10:03:00Z', used: 25 * MiB, referenced: 100 * MiB, written: 0 },
    ];
    const g = chartGeometry(samples, 300, 100);
    expect(g.top).toBe(100 * MiB);
    expect(g.points.referenced).toEqual([[0, 100], [100, 0], [300, 0]]);
    expect(g.points.used).toEqual([[0, 100], [100, 50], [300, 75]]);
    // One sample: in the middle.
    expect(chartGeometry(samples.slice(1, 2), 300, 100).points.written).toEqual([[150, 90]]);
  });

  it('writes sizes that end in zeros whole (100 MiB, not 1 MiB), like the CLI', () => {
    for (const [n, t] of [[100 * MiB, '100 MiB'], [200 * 1024, '200 KiB'], [120 * MiB, '120 MiB'], [10 * MiB, '10 MiB'], [1.5 * MiB, '1.5 MiB']] as const) {
      expect(formatSize(n)).toBe(t);
      expect(browserFormatSize(n)).toBe(t);
    }
  });
});

describe('schedules in the schedule.* contract shapes', () => {
  it('turns the add dialog into schedule.add params', () => {
    expect(scheduleParams('vm1', { kind: 'daily', when: '02:00', tz: '', keep: '7', backupTo: '', keepBackups: '' }))
      .toEqual({ volume: 'vm1', kind: 'daily', at: '02:00', keep: 7 });
    expect(scheduleParams('vm1', { kind: 'every', when: '30m', keep: '3', backupTo: 'offsite', keepBackups: '10', tz: 'Europe/Paris' }))
      .toEqual({ volume: 'vm1', kind: 'every', every: '30m', keep: 3, tz: 'Europe/Paris', backupTo: 'offsite', keepBackups: 10 });
    expect(scheduleParams('vm1', { kind: 'hourly', when: '', keep: '1' })).toEqual({ volume: 'vm1', kind: 'hourly', keep: 1 });
    expect(() => scheduleParams('vm1', { kind: 'yearly', keep: '1' })).toThrow(/choose a kind/);
    expect(() => scheduleParams('vm1', { kind: 'every', when: '', keep: '1' })).toThrow(/every: how often/);
    expect(() => scheduleParams('vm1', { kind: 'daily', keep: '0' })).toThrow(/keep/);
    expect(() => scheduleParams('vm1', { kind: 'daily', keep: '2', backupTo: 't', keepBackups: 'x' })).toThrow(/keep backups/);
  });

  it('says a schedule and its last run in one line', () => {
    const s: ScheduleRow = { id: 'sch1', volume: 'vm1', kind: 'daily', at: '02:00', tz: 'UTC', keep: 7, backupTo: 'offsite', keepBackups: 30, nextRun: '2026-12-01T02:00:00Z' };
    expect(scheduleText(s)).toBe('daily at 02:00 (UTC), keep 7, back up to offsite (keep 30)');
    expect(scheduleText({ id: 'sch2', volume: 'vm1', kind: 'every', every: '10m', tz: 'UTC', keep: 7, nextRun: s.nextRun })).toBe('every 10m, keep 7');
    expect(lastRunText(s)).toBe('never');
    expect(lastRunText({ ...s, lastResult: { ok: true, snapshot: 'vm1-20261130T020000Z' } })).toBe('ok: vm1-20261130T020000Z');
    expect(lastRunText({ ...s, lastResult: { ok: false, error: 'no space' } })).toBe('failed: no space');
  });
});

describe('the console watch', () => {
  async function context(): Promise<ControlContext> {
    const store = new FakeStore();
    const registry = new VolumeRegistry(store, { defaultExport: 'vm1', readOnly: false });
    await registry.createVolume({ name: 'vm1', size: 4 * MiB });
    await registry.createVolume({ name: 'db', size: 4 * MiB });
    return {
      registry,
      serverInfo: () => ({
        version: '0', listeners: [], startedAt: new Date(),
        connections: [
          { peer: '10.0.0.5:40000', identity: ['alice', 'alice@example.com'], tls: 'TLSv1.3', export: 'vm1' },
          { peer: '10.0.0.6:40001', identity: [], tls: null, export: 'vm1@s1' },
          { peer: '10.0.0.7:40002', identity: [], tls: null, export: null },
          { peer: '10.0.0.8:40003', identity: ['bob'], tls: 'TLSv1.3', export: 'db' },
        ],
      }),
    };
  }

  it('groups connected clients per volume with their TLS identity (still negotiating: none)', async () => {
    const st = await gatherState(await context());
    expect(st.clients).toEqual({
      vm1: [
        { peer: '10.0.0.5:40000', identity: ['alice', 'alice@example.com'], tls: 'TLSv1.3', export: 'vm1' },
        { peer: '10.0.0.6:40001', identity: [], tls: null, export: 'vm1@s1' },
      ],
      db: [{ peer: '10.0.0.8:40003', identity: ['bob'], tls: 'TLSv1.3', export: 'db' }],
    });
    // No backup manager, no schedule methods here: empty, and null (the page hides schedules).
    expect(st.jobs).toEqual([]);
    expect(st.schedules).toBeNull();
  });

  it('reads backup lists at first, after a backup action, and not on every gather', async () => {
    const ctx = await context();
    let listed = 0;
    const backups = {
      targets: () => [{ name: 't', url: 'file:///x', encrypted: false, uploadLimit: null }],
      list: async () => { listed++; return []; },
      jobs: { list: () => [] },
    };
    const watch = new ConsoleWatch({ ...ctx, backups: backups as unknown as NonNullable<ControlContext['backups']> }, 20);
    const states: string[] = [];
    const off = watch.subscribe((j) => states.push(j));
    const until = async (pred: () => boolean): Promise<void> => {
      for (let i = 0; !pred(); i++) {
        if (i > 200) throw new Error('never');
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await until(() => states.length > 0);
    expect(JSON.parse(states[0]!)).toMatchObject({ targets: [{ name: 't' }], backups: { t: [] }, backupErrors: {} });
    expect(listed).toBe(1);
    await new Promise((r) => setTimeout(r, 200)); // several gathers at 20 ms
    expect(listed).toBe(1);
    watch.poke(true);
    await until(() => listed === 2);
    off();
    watch.close();
  });
});
