// The Backups page: per target its backups (state, with the running job's progress; size; what
// was sent and what was reused), the jobs (backups, restores, verifies) with their progress, and
// the actions on each (restore, delete, cancel).
import { formatSize, formatTime, h, stateBadge } from './dom.ts';
import type { BackupRow, ConsoleState, JobRow } from './model.ts';
import { button, cell, table, volumeLink } from './widgets.ts';

export interface BackupActions {
  restoreBackup(target: string, b: BackupRow): void;
  deleteBackup(target: string, b: BackupRow): void;
  cancelJob(j: JobRow): void;
}

/** The running backup job writing this entry, if any (an in-progress entry has no percent of its own). */
function runningJob(jobs: JobRow[], target: string, b: BackupRow): JobRow | undefined {
  return jobs.find((j) => j.kind === 'backup' && j.state === 'running' && j.target === target && j.volume === b.volume && j.snapshot === b.snapshot);
}

export function backupsPage(state: ConsoleState, act: BackupActions): Node[] {
  const nodes: Node[] = [h('h1', {}, 'Backups')];
  if (state.targets.length === 0) nodes.push(h('p', {}, 'This server has no backup targets. Start it with --backup-target NAME=URL (file:///DIR or s3://BUCKET/PREFIX).'));
  for (const t of state.targets) {
    const rows = (state.backups[t.name] ?? []).map((b) => {
      const job = b.state === 'backing-up' ? runningJob(state.jobs, t.name, b) : undefined;
      const done = b.state === 'backed-up';
      return h('tr', { 'data-backup': b.id, 'data-target': t.name },
        cell('Backup', h('strong', {}, b.id)),
        cell('Of', `${b.volume}@${b.snapshot}`),
        cell('Created', formatTime(b.created)),
        cell('State', stateBadge(job ? { state: 'backing-up', progress: job.percent / 100 } : b.state)),
        cell('Size', done ? formatSize(b.size) : '—'),
        cell('Sent', done ? formatSize(b.bytesUploaded) : '—'),
        cell('Blocks reused', done ? `${b.blocksReused} of ${b.blocks}` : '—'),
        cell('Base', b.base ?? 'full'),
        cell('Actions', done ? h('div', { class: 'actions' },
          button('Restore', `restore:${t.name}:${b.id}`, () => act.restoreBackup(t.name, b), 'secondary', `Restore backup ${b.id}`),
          button('Delete', `delbackup:${t.name}:${b.id}`, () => act.deleteBackup(t.name, b), 'danger', `Delete backup ${b.id}`)) : '—'));
    });
    const error = state.backupErrors[t.name];
    nodes.push(h('section', { class: 'target', 'data-target': t.name },
      h('h2', {}, `${t.name} `, h('span', { class: 'path' }, t.url), t.encrypted ? ' (encrypted)' : '', t.uploadLimit !== null ? ` (uploads up to ${formatSize(t.uploadLimit)}/s)` : ''),
      error !== undefined ? h('p', { class: 'error', role: 'alert' }, `Cannot list this target: ${error}`)
        : rows.length === 0 ? h('p', {}, 'No backups yet: use Back up on a snapshot.')
          : table('backups', `Backups on ${t.name}`, ['Backup', 'Of', 'Created', 'State', 'Size', 'Sent', 'Blocks reused', 'Base', 'Actions'], rows)));
  }
  nodes.push(h('h2', {}, 'Jobs'), jobsTable(state.jobs, act));
  return nodes;
}

export function jobsTable(jobs: JobRow[], act: BackupActions): Node {
  if (jobs.length === 0) return h('p', {}, 'No jobs.');
  const rows = [...jobs].reverse().map((j) => h('tr', { 'data-job': j.id },
    cell('Job', j.id),
    cell('Kind', j.kind),
    cell('Target', j.target),
    cell('Volume', j.volume === null ? '—' : h('span', {}, volumeLink(j.volume), j.snapshot !== null ? `@${j.snapshot}` : '')),
    cell('State', stateBadge(j.error !== null ? { state: j.state, reason: `${j.error.message} (${j.error.code})` } : j.state, j.state === 'running' ? j.percent / 100 : undefined)),
    cell('Progress', j.bytesTotal > 0 ? `${formatSize(j.bytesDone)} of ${formatSize(j.bytesTotal)}` : '—'),
    cell('Started', formatTime(j.started)),
    cell('Actions', j.state === 'running' ? button('Cancel', `canceljob:${j.id}`, () => act.cancelJob(j), 'danger', `Cancel job ${j.id}`) : '—')));
  return table('jobs', 'Jobs', ['Job', 'Kind', 'Target', 'Volume', 'State', 'Progress', 'Started', 'Actions'], rows);
}
