// A volume's schedules (schedule.list) with their next and last runs, and the add and remove
// actions. Shown only when the server has the schedule methods.
import { formatTime, h, stateBadge } from './dom.ts';
import type { ScheduleRow } from './model.ts';
import { lastRunText, scheduleText } from './schedule-text.ts';
import { button, cell, table } from './widgets.ts';

export interface ScheduleActions {
  addSchedule(volume: string): void;
  removeSchedule(s: ScheduleRow): void;
}

export function schedulesSection(volume: string, schedules: ScheduleRow[] | null, act: ScheduleActions): Node[] {
  if (schedules === null) return [];
  const mine = schedules.filter((s) => s.volume === volume);
  const rows = mine.map((s) => h('tr', { 'data-schedule': s.id },
    cell('Schedule', h('strong', {}, s.id)),
    cell('When', scheduleText(s)),
    cell('Next run', formatTime(s.nextRun)),
    cell('Last run', s.lastRun !== undefined ? formatTime(s.lastRun) : '—'),
    cell('Result', s.lastResult === undefined ? '—' : stateBadge(s.lastResult.ok ? 'ready' : { state: 'failed', reason: s.lastResult.error ?? '' }, undefined, lastRunText(s))),
    cell('Actions', button('Remove', `delsched:${s.id}`, () => act.removeSchedule(s), 'danger', `Remove schedule ${s.id}`))));
  return [
    h('h2', {}, 'Schedules'),
    rows.length === 0 ? h('p', {}, 'No schedules.') : table('schedules', `Schedules of ${volume}`, ['Schedule', 'When', 'Next run', 'Last run', 'Result', 'Actions'], rows),
    h('div', { class: 'actions' }, button('Add schedule', `addsched:${volume}`, () => act.addSchedule(volume), 'secondary')),
  ];
}
