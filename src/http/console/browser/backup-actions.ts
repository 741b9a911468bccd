// The backup actions, each one control method through a dialog: back up a snapshot
// (backup.create), restore a backup to a new volume (backup.restore, `instant` sent only when
// ticked), delete a backup (backup.delete), cancel a job (job.cancel). Progress then shows in the
// snapshot's state and the Backups page, from the event stream.
import { rpc } from './api.ts';
import { openDialog } from './dialogs.ts';
import { formatSize, formatTime, h } from './dom.ts';
import type { BackupRow, JobRow, Snapshot, TargetView } from './model.ts';

/** NAME_PATTERN of the server (src/storage/types.ts), for the browser's own hint only. */
const NAME_HTML_PATTERN = '[A-Za-z0-9_][A-Za-z0-9._\\-]{0,127}';

export function backUp(s: Snapshot, targets: TargetView[]): void {
  const id = `${s.volume}@${s.name}`;
  openDialog({
    title: `Back up ${id}`,
    body: targets.length === 0
      ? [h('p', { class: 'warn' }, 'This server has no backup targets (serve --backup-target NAME=URL).')]
      : [`Only the blocks the target does not hold yet are sent; the snapshot cannot be deleted while it is read.`],
    fields: [{ name: 'target', label: 'Target', kind: 'select', required: true, options: targets.map((t) => ({ value: t.name, label: `${t.name} (${t.url})` })) }],
    confirm: 'Back up',
    async run(v) {
      const job = await rpc<JobRow>('backup.create', { target: v.target, volume: s.volume, snapshot: s.name });
      return `Backing up ${id} to ${v.target ?? ''} (job ${job.id})`;
    },
  });
}

export function restoreBackup(target: string, b: BackupRow): void {
  openDialog({
    title: `Restore backup ${b.id}`,
    body: [h('p', {}, `${b.volume}@${b.snapshot} of ${formatTime(b.created)} (${formatSize(b.size)}) from ${target}, into a new volume.`)],
    fields: [
      { name: 'volume', label: 'New volume name', required: true, pattern: NAME_HTML_PATTERN, maxLength: 128, value: `${b.volume}-restored` },
      { name: 'instant', label: 'Instant: serve the volume at once, fetching blocks as they are read', kind: 'checkbox' },
    ],
    confirm: 'Restore',
    async run(v) {
      const params: Record<string, unknown> = { target, id: b.id, volume: v.volume };
      if (v.instant === 'on') params.instant = true; // only when asked: a server without it refuses the field
      const job = await rpc<JobRow>('backup.restore', params);
      return `Restoring ${b.id} into ${v.volume ?? ''} (job ${job.id})`;
    },
  });
}

export function deleteBackup(target: string, b: BackupRow): void {
  openDialog({
    title: `Delete backup ${b.id}?`,
    body: [
      h('p', {}, `The backup of ${b.volume}@${b.snapshot} taken ${formatTime(b.created)} is removed from ${target}. `,
        'Blocks that no other backup uses are given back at the next prune. The snapshot itself is kept.'),
    ],
    confirm: `Delete ${b.id}`,
    danger: true,
    async run() {
      await rpc('backup.delete', { target, id: b.id });
      return `Backup ${b.id} deleted from ${target}`;
    },
  });
}

export function cancelJob(j: JobRow): void {
  openDialog({
    title: `Cancel job ${j.id}?`,
    body: [`The ${j.kind} stops; what it wrote so far is removed.`],
    confirm: 'Cancel the job',
    danger: true,
    async run() {
      await rpc('job.cancel', { id: j.id });
      return `Job ${j.id} cancelled`;
    },
  });
}
