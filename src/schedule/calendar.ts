// When a schedule runs next: pure, given the instant to look after. Calendar kinds (hourly at a
// minute, daily at a time, weekly on a day at a time, monthly on a day at a time) are read in an
// IANA time zone through Intl.DateTimeFormat; `every` is a fixed duration from the last run.
// Daylight saving, the rules (protocol/control.md, "Schedules"):
//   - a wall time that does not exist that day (spring forward: 02:30 in Europe/Paris on the last
//     Sunday of March) runs at the same distance after the gap, i.e. 03:30 local: never skipped;
//   - a wall time that exists twice (fall back: 02:30 on the last Sunday of October) runs at its
//     first occurrence only: never doubled;
//   - hourly runs follow real hours (both 02:15s of a fall-back night, no 02:15 in spring).
// A monthly day past the month's end (31 in April) runs on the month's last day.

/** Calendar and interval kinds. */
export const ScheduleKind = { Hourly: 'hourly', Daily: 'daily', Weekly: 'weekly', Monthly: 'monthly', Every: 'every' } as const;
export type ScheduleKind = (typeof ScheduleKind)[keyof typeof ScheduleKind];
export const SCHEDULE_KINDS: readonly ScheduleKind[] = Object.values(ScheduleKind);

export function isScheduleKind(k: unknown): k is ScheduleKind {
  return typeof k === 'string' && (SCHEDULE_KINDS as readonly string[]).includes(k);
}

/** The shortest and longest `every` (1 s lets tests and users check a policy quickly). */
export const EVERY_MIN_MS = 1000;
export const EVERY_MAX_MS = 366 * 86_400_000;
/** The zone of a schedule added without one. */
export const DEFAULT_TZ = 'UTC';

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;
const MINUTE_MS = 60_000;
const DAY_MS = 86_400_000;
/** No zone moves its clock by more than this at once; offsets are sampled this far either side. */
const TRANSITION_SPAN_MS = 12 * 3_600_000;

/** A parsed `at`: which fields apply depends on the kind. */
export interface CalendarSpec {
  kind: Exclude<ScheduleKind, 'every'>;
  minute: number;
  hour: number;
  /** weekly: 0 = Sunday. */
  weekday: number;
  /** monthly: 1..31. */
  day: number;
  tz: string;
}

export type ScheduleSpec = CalendarSpec | { kind: 'every'; everyMs: number };

/** A schedule's `at`/`every`/`tz` that cannot be read; `param` names the field. */
export class ScheduleSpecError extends Error {
  readonly param: 'at' | 'every' | 'tz' | 'kind';
  constructor(param: 'at' | 'every' | 'tz' | 'kind', message: string) {
    super(message);
    this.name = 'ScheduleSpecError';
    this.param = param;
  }
}

/** `30s`, `10m`, `2h`, `1d` to milliseconds, within EVERY_MIN_MS..EVERY_MAX_MS. */
export function parseEvery(s: string): number {
  const m = /^(\d{1,9})([smhd])$/.exec(s);
  const ms = m ? Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS] : NaN;
  if (!m || !(ms >= EVERY_MIN_MS && ms <= EVERY_MAX_MS)) {
    throw new ScheduleSpecError('every', `every '${s}' is not a duration from 1s to 366d (e.g. 30s, 10m, 2h, 1d)`);
  }
  return ms;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(tz: string): Intl.DateTimeFormat {
  let f = formatters.get(tz);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
    });
    formatters.set(tz, f);
  }
  return f;
}

/** Throws ScheduleSpecError unless `tz` is an IANA zone this Node knows; returns its canonical name. */
export function checkTimeZone(tz: string): string {
  try {
    return formatter(tz).resolvedOptions().timeZone;
  } catch {
    throw new ScheduleSpecError('tz', `time zone '${tz}' is not one this server knows (e.g. UTC, Europe/Paris, America/New_York)`);
  }
}

/** The zone's offset from UTC at instant `t`, in milliseconds (local = UTC + offset). */
export function zoneOffsetMs(t: number, tz: string): number {
  const whole = Math.floor(t / 1000) * 1000;
  const p: Record<string, number> = {};
  for (const part of formatter(tz).formatToParts(new Date(whole))) if (part.type !== 'literal') p[part.type] = Number(part.value);
  const local = Date.UTC(p.year!, p.month! - 1, p.day!, p.hour!, p.minute!, p.second!);
  return local - whole;
}

/**
 * The instant of wall time y-m-d hh:mm in `tz`: the first one when it exists twice, the one
 * shifted by the gap when it does not exist.
 */
export function localToInstant(y: number, month: number, d: number, hh: number, mm: number, tz: string): number {
  const naive = Date.UTC(y, month - 1, d, hh, mm);
  const before = zoneOffsetMs(naive - TRANSITION_SPAN_MS, tz);
  const after = zoneOffsetMs(naive + TRANSITION_SPAN_MS, tz);
  const valid = [naive - before, naive - after].filter((t) => zoneOffsetMs(t, tz) === naive - t);
  if (valid.length > 0) return Math.min(...valid);
  return naive - before; // in the gap: the wall time read with the offset before it
}

function daysInMonth(y: number, month: number): number {
  return new Date(Date.UTC(y, month, 0)).getUTCDate();
}

/** Parses a calendar kind's `at` (hourly ":15", daily "02:00", weekly "sun,03:00", monthly "1,04:00"). */
export function parseAt(kind: Exclude<ScheduleKind, 'every'>, at: string, tz: string): CalendarSpec {
  const bad = (example: string): never => { throw new ScheduleSpecError('at', `${kind} at '${at}' is not ${example}`); };
  const hhmm = (s: string, example: string): { hour: number; minute: number } => {
    const m = /^(\d{1,2}):(\d{2})$/.exec(s);
    if (!m || Number(m[1]) > 23 || Number(m[2]) > 59) bad(example);
    return { hour: Number(m![1]), minute: Number(m![2]) };
  };
  const spec: CalendarSpec = { kind, minute: 0, hour: 0, weekday: 0, day: 1, tz: checkTimeZone(tz) };
  switch (kind) {
    case 'hourly': {
      const m = /^:(\d{2})$/.exec(at);
      if (!m || Number(m[1]) > 59) bad(':MM (e.g. :15)');
      spec.minute = Number(m![1]);
      break;
    }
    case 'daily':
      Object.assign(spec, hhmm(at, 'HH:MM (e.g. 02:00)'));
      break;
    case 'weekly': {
      const [day, time] = at.split(',');
      const wd = WEEKDAYS.indexOf((day ?? '').slice(0, 3).toLowerCase() as (typeof WEEKDAYS)[number]);
      const full = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];
      if (wd < 0 || !(day!.length === 3 || day!.toLowerCase() === full[wd]) || time === undefined) bad('DAY,HH:MM (e.g. sun,03:00)');
      spec.weekday = wd;
      Object.assign(spec, hhmm(time!, 'DAY,HH:MM (e.g. sun,03:00)'));
      break;
    }
    case 'monthly': {
      const [day, time] = at.split(',');
      if (!/^\d{1,2}$/.test(day ?? '') || Number(day) < 1 || Number(day) > 31 || time === undefined) bad('DAY,HH:MM with DAY 1-31 (e.g. 1,04:00)');
      spec.day = Number(day);
      Object.assign(spec, hhmm(time!, 'DAY,HH:MM with DAY 1-31 (e.g. 1,04:00)'));
      break;
    }
  }
  return spec;
}

/** Reads kind + at/every + tz into a spec; ScheduleSpecError names the bad field. */
export function parseSpec(kind: string, at: string | undefined, every: string | undefined, tz: string): ScheduleSpec {
  if (!isScheduleKind(kind)) throw new ScheduleSpecError('kind', `kind '${kind}' is not one of ${SCHEDULE_KINDS.join(', ')}`);
  if (kind === 'every') {
    if (every === undefined) throw new ScheduleSpecError('every', 'kind "every" needs "every" (e.g. 10m)');
    if (at !== undefined) throw new ScheduleSpecError('at', 'kind "every" takes no "at"');
    checkTimeZone(tz);
    return { kind, everyMs: parseEvery(every) };
  }
  if (at === undefined) throw new ScheduleSpecError('at', `kind "${kind}" needs "at"`);
  if (every !== undefined) throw new ScheduleSpecError('every', `kind "${kind}" takes no "every"`);
  return parseAt(kind, at, tz);
}

/** The first run strictly after `after` (ms since the epoch). */
export function nextRun(spec: ScheduleSpec, after: number): number {
  if (spec.kind === 'every') return after + spec.everyMs;
  if (spec.kind === 'hourly') {
    // Real minutes: the first whole minute after `after` whose local minute is the one asked for.
    let t = Math.floor(after / MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    for (let i = 0; i < 3 * 60; i++, t += MINUTE_MS) {
      const localMinute = Math.floor((t + zoneOffsetMs(t, spec.tz)) / MINUTE_MS) % 60;
      if (localMinute === spec.minute) return t;
    }
    throw new Error(`no hourly run within 3 hours of ${new Date(after).toISOString()} in ${spec.tz}`);
  }
  // Calendar days from the local day before `after` on: the first candidate after it.
  const local = new Date(after + zoneOffsetMs(after, spec.tz));
  const start = Date.UTC(local.getUTCFullYear(), local.getUTCMonth(), local.getUTCDate()) - DAY_MS;
  const horizon = spec.kind === 'monthly' ? 70 : 10;
  for (let i = 0; i < horizon; i++) {
    const d = new Date(start + i * DAY_MS);
    const y = d.getUTCFullYear();
    const month = d.getUTCMonth() + 1;
    const day = d.getUTCDate();
    if (spec.kind === 'weekly' && d.getUTCDay() !== spec.weekday) continue;
    if (spec.kind === 'monthly' && day !== Math.min(spec.day, daysInMonth(y, month))) continue;
    const t = localToInstant(y, month, day, spec.hour, spec.minute, spec.tz);
    if (t > after) return t;
  }
  throw new Error(`no ${spec.kind} run found after ${new Date(after).toISOString()}`);
}
