// Schedules as the console reads and writes them (the schedule.* contract in protocol/control.md):
// the add dialog's values turned into schedule.add's params, and a schedule said in one line.
// Pure (no DOM), so node tests check them directly.
import type { ScheduleRow } from './model.ts';

export const SCHEDULE_KINDS = ['hourly', 'daily', 'weekly', 'monthly', 'every'] as const;

/** What the `at` (or `every`) field takes for each kind, as the dialog's hint says it. */
export const AT_EXAMPLES: Record<ScheduleRow['kind'], string> = {
  hourly: ':15', daily: '02:00', weekly: 'sun,03:00', monthly: '1,04:00', every: '30m',
};

/** The add dialog's values (all text) as schedule.add params; a wrong value throws with what to type. */
export function scheduleParams(volume: string, v: Record<string, string>): Record<string, unknown> {
  const kind = v.kind ?? '';
  if (!(SCHEDULE_KINDS as readonly string[]).includes(kind)) throw new Error(`choose a kind: ${SCHEDULE_KINDS.join(', ')}`);
  const when = (v.when ?? '').trim();
  const keep = Number(v.keep);
  if (!/^\d+$/.test(v.keep ?? '') || keep < 1) throw new Error('keep: how many snapshots to keep (1 or more)');
  const p: Record<string, unknown> = { volume, kind, keep };
  if (kind === 'every') {
    if (when === '') throw new Error(`every: how often, e.g. ${AT_EXAMPLES.every}`);
    p.every = when;
  } else if (when !== '') p.at = when;
  if (v.tz) p.tz = v.tz;
  if (v.backupTo) {
    p.backupTo = v.backupTo;
    if (v.keepBackups) {
      if (!/^\d+$/.test(v.keepBackups) || Number(v.keepBackups) < 1) throw new Error('keep backups: a whole number, 1 or more');
      p.keepBackups = Number(v.keepBackups);
    }
  }
  return p;
}

/** `daily at 02:00 (UTC), keep 7, back up to offsite (keep 30)`. */
export function scheduleText(s: ScheduleRow): string {
  const when = s.kind === 'every' ? `every ${s.every ?? '?'}` : `${s.kind}${s.at !== undefined ? ` at ${s.at}` : ''}`;
  const backup = s.backupTo !== undefined ? `, back up to ${s.backupTo}${s.keepBackups !== undefined ? ` (keep ${s.keepBackups})` : ''}` : '';
  return `${when}${s.kind === 'every' ? '' : ` (${s.tz})`}, keep ${s.keep}${backup}`;
}

/** The last run as text: `ok: vm1-...`, `failed: reason`, or `never`. */
export function lastRunText(s: ScheduleRow): string {
  if (s.lastResult === undefined) return 'never';
  return s.lastResult.ok ? `ok${s.lastResult.snapshot !== undefined ? `: ${s.lastResult.snapshot}` : ''}` : `failed: ${s.lastResult.error ?? 'unknown error'}`;
}
