// Issue 16, schedules: when the next run is, on plain instants. Both daylight-saving transitions
// of Europe/Paris (a daily 02:30 run neither skipped nor doubled), real hours for hourly runs,
// month ends, weekdays, `every` from 1s, and the refusals of what cannot be read.
import { describe, expect, it } from 'vitest';
import {
  EVERY_MIN_MS, localToInstant, nextRun, parseEvery, parseSpec, ScheduleSpecError, zoneOffsetMs, type ScheduleSpec,
} from '../../src/schedule/calendar.ts';

const T = (iso: string): number => Date.parse(iso);
const iso = (t: number): string => new Date(t).toISOString();

/** The runs of `spec` after `from`, up to `until`. */
function runs(spec: ScheduleSpec, from: string, until: string): string[] {
  const out: string[] = [];
  for (let t = nextRun(spec, T(from)); t <= T(until); t = nextRun(spec, t)) out.push(iso(t));
  return out;
}

describe('schedule calendar', () => {
  it('reads zone offsets, including both sides of a transition', () => {
    expect(zoneOffsetMs(T('2026-01-15T12:00:00Z'), 'Europe/Paris')).toBe(3_600_000);
    expect(zoneOffsetMs(T('2026-07-15T12:00:00Z'), 'Europe/Paris')).toBe(7_200_000);
    expect(zoneOffsetMs(T('2026-03-29T00:59:59Z'), 'Europe/Paris')).toBe(3_600_000);
    expect(zoneOffsetMs(T('2026-03-29T01:00:00Z'), 'Europe/Paris')).toBe(7_200_000);
    expect(zoneOffsetMs(T('2026-07-15T12:00:00Z'), 'Asia/Kathmandu')).toBe(5.75 * 3_600_000);
  });

  it('runs daily 02:30 Europe/Paris once on the spring-forward day, after the gap (03:30 CEST)', () => {
    const spec = parseSpec('daily', '02:30', undefined, 'Europe/Paris');
    // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    expect(runs(spec, '2026-03-27T12:00:00Z', '2026-03-31T12:00:00Z')).toEqual([
      '2026-03-28T01:30:00.000Z', // 02:30 CET
      '2026-03-29T01:30:00.000Z', // the missing 02:30, run at 03:30 CEST: not skipped
      '2026-03-30T00:30:00.000Z', // 02:30 CEST
      '2026-03-31T00:30:00.000Z',
    ]);
    expect(localToInstant(2026, 3, 29, 2, 30, 'Europe/Paris')).toBe(T('2026-03-29T01:30:00Z'));
  });

  it('runs daily 02:30 Europe/Paris once on the fall-back day, at its first occurrence', () => {
    const spec = parseSpec('daily', '02:30', undefined, 'Europe/Paris');
    // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens at 00:30Z and again at 01:30Z.
    const got = runs(spec, '2026-10-23T12:00:00Z', '2026-10-27T12:00:00Z');
    expect(got).toEqual([
      '2026-10-24T00:30:00.000Z',
      '2026-10-25T00:30:00.000Z', // 02:30 CEST, the first one
      '2026-10-26T01:30:00.000Z', // 02:30 CET
      '2026-10-27T01:30:00.000Z',
    ]);
    // From just after the first 02:30, the second 02:30 of that night is not a run.
    expect(iso(nextRun(spec, T('2026-10-25T00:30:00Z')))).toBe('2026-10-26T01:30:00.000Z');
    expect(iso(nextRun(spec, T('2026-10-25T01:00:00Z')))).toBe('2026-10-26T01:30:00.000Z');
  });

  it('runs hourly by real hours: both 02:15s of a fall-back night, none at the missing 02:15', () => {
    const spec = parseSpec('hourly', ':15', undefined, 'Europe/Paris');
    expect(runs(spec, '2026-10-24T23:00:00Z', '2026-10-25T03:00:00Z')).toEqual([
      '2026-10-24T23:15:00.000Z', // 01:15 CEST
      '2026-10-25T00:15:00.000Z', // 02:15 CEST
      '2026-10-25T01:15:00.000Z', // 02:15 CET
      '2026-10-25T02:15:00.000Z', // 03:15 CET
    ]);
    expect(runs(spec, '2026-03-28T23:30:00Z', '2026-03-29T02:00:00Z')).toEqual([
      '2026-03-29T00:15:00.000Z', // 01:15 CET
      '2026-03-29T01:15:00.000Z', // 03:15 CEST (02:15 does not exist)
    ]);
    // A zone 45 minutes off the hour: local :15 is UTC :30.
    expect(iso(nextRun(parseSpec('hourly', ':15', undefined, 'Asia/Kathmandu'), T('2026-07-15T12:00:00Z')))).toBe('2026-07-15T12:30:00.000Z');
  });

  it('runs weekly on the day asked, in the zone', () => {
    const spec = parseSpec('weekly', 'sun,03:00', undefined, 'America/New_York');
    // 2026-12-06 is a Sunday; 03:00 EST = 08:00Z.
    expect(runs(spec, '2026-11-30T00:00:00Z', '2026-12-14T00:00:00Z')).toEqual(['2026-12-06T08:00:00.000Z', '2026-12-13T08:00:00.000Z']);
    expect(parseSpec('weekly', 'Sunday,03:00', undefined, 'UTC')).toMatchObject({ weekday: 0, hour: 3 });
  });

  it('runs monthly on the day asked, or on the last day of a shorter month', () => {
    const d31 = parseSpec('monthly', '31,04:00', undefined, 'UTC');
    expect(runs(d31, '2027-12-31T12:00:00Z', '2028-05-01T00:00:00Z')).toEqual([
      '2028-01-31T04:00:00.000Z', '2028-02-29T04:00:00.000Z', '2028-03-31T04:00:00.000Z', '2028-04-30T04:00:00.000Z',
    ]);
    expect(iso(nextRun(d31, T('2027-01-31T05:00:00Z')))).toBe('2027-02-28T04:00:00.000Z');
    const d1 = parseSpec('monthly', '1,04:00', undefined, 'Europe/Paris');
    expect(runs(d1, '2026-11-30T00:00:00Z', '2027-02-01T12:00:00Z')).toEqual([
      '2026-12-01T03:00:00.000Z', '2027-01-01T03:00:00.000Z', '2027-02-01T03:00:00.000Z',
    ]);
  });

  it('runs every DURATION after the last run, from 1s up', () => {
    expect(parseEvery('1s')).toBe(EVERY_MIN_MS);
    expect(parseEvery('30s')).toBe(30_000);
    expect(parseEvery('10m')).toBe(600_000);
    expect(parseEvery('2h')).toBe(7_200_000);
    expect(parseEvery('1d')).toBe(86_400_000);
    const spec = parseSpec('every', undefined, '2s', 'UTC');
    expect(nextRun(spec, 1000)).toBe(3000);
  });

  it('refuses what it cannot read, naming the field', () => {
    const bad: [string, string | undefined, string | undefined, string, string][] = [
      ['daily', '24:00', undefined, 'UTC', 'at'],
      ['daily', '2:5', undefined, 'UTC', 'at'],
      ['hourly', '15', undefined, 'UTC', 'at'],
      ['hourly', ':60', undefined, 'UTC', 'at'],
      ['weekly', 'sunny,03:00', undefined, 'UTC', 'at'],
      ['weekly', 'sun', undefined, 'UTC', 'at'],
      ['monthly', '0,04:00', undefined, 'UTC', 'at'],
      ['monthly', '32,04:00', undefined, 'UTC', 'at'],
      ['daily', undefined, undefined, 'UTC', 'at'],
      ['daily', '02:00', '10m', 'UTC', 'every'],
      ['every', undefined, '0s', 'UTC', 'every'],
      ['every', undefined, '500ms', 'UTC', 'every'],
      ['every', undefined, '367d', 'UTC', 'every'],
      ['every', undefined, undefined, 'UTC', 'every'],
      ['every', ':15', '10m', 'UTC', 'at'],
      ['daily', '02:00', undefined, 'Mars/Olympus', 'tz'],
      ['yearly', '02:00', undefined, 'UTC', 'kind'],
    ];
    for (const [kind, at, every, tz, param] of bad) {
      let err: unknown;
      try {
        parseSpec(kind, at, every, tz);
      } catch (e) {
        err = e;
      }
      expect(err, `${kind} ${at} ${every} ${tz}`).toBeInstanceOf(ScheduleSpecError);
      expect((err as ScheduleSpecError).param).toBe(param);
    }
  });
});
