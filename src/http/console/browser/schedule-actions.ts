// Schedule editing through schedule.add and schedule.remove (the contract in protocol/control.md):
// a dialog for a new schedule and a confirmation to remove one.
import { rpc, RpcFailure } from './api.ts';
import { openDialog } from './dialogs.ts';
import { h } from './dom.ts';
import type { ScheduleRow, TargetView } from './model.ts';
import { AT_EXAMPLES, SCHEDULE_KINDS, scheduleParams, scheduleText } from './schedule-text.ts';

export function addSchedule(volume: string, targets: TargetView[]): void {
  openDialog({
    title: `New schedule for ${volume}`,
    body: ['Snapshots taken on a schedule; the oldest beyond "keep" are deleted.'],
    fields: [
      { name: 'kind', label: 'Kind', kind: 'select', required: true, value: 'daily', options: SCHEDULE_KINDS.map((k) => ({ value: k, label: k })) },
      { name: 'when', label: 'At (or how often, for every)', placeholder: '02:00',
        hint: Object.entries(AT_EXAMPLES).map(([k, v]) => `${k} ${v}`).join(' · ') },
      { name: 'tz', label: 'Time zone (optional)', placeholder: 'UTC' },
      { name: 'keep', label: 'Snapshots to keep', kind: 'number', min: 1, value: '7', required: true },
      { name: 'backupTo', label: 'Back up to (optional)', kind: 'select', options: [{ value: '', label: 'no backup' }, ...targets.map((t) => ({ value: t.name, label: t.name }))] },
      { name: 'keepBackups', label: 'Backups to keep (optional)', kind: 'number', min: 1 },
    ],
    confirm: 'Add schedule',
    async run(v) {
      let params: Record<string, unknown>;
      try {
        params = scheduleParams(volume, v);
      } catch (e) {
        throw new RpcFailure('INVALID_INPUT', (e as Error).message);
      }
      const s = await rpc<ScheduleRow>('schedule.add', params);
      return `Schedule ${s.id} added: ${scheduleText(s)}`;
    },
  });
}

export function removeSchedule(s: ScheduleRow): void {
  openDialog({
    title: `Remove schedule ${s.id}?`,
    body: [h('p', {}, `${s.volume}: ${scheduleText(s)}. The snapshots it took are kept.`)],
    confirm: 'Remove',
    danger: true,
    async run() {
      await rpc('schedule.remove', { id: s.id });
      return `Schedule ${s.id} removed`;
    },
  });
}
