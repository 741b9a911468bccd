// The state of a volume or snapshot, one vocabulary for every place that shows it (volume
// list/info, snapshot list/info, the control socket, an NBD client's refusal, the startup log):
// `ready`, or `unavailable` with the reason (its backing file changed or is missing, and what
// changed). Other states (`creating`, `deleting` for snapshots; `restoring` for a volume still
// arriving from a backup, src/backup/instant-restores.ts) come from the operations that set them.
import type { RestoreStatus } from './view-types.d.ts';

export const VolumeState = { Ready: 'ready', Unavailable: 'unavailable', Restoring: 'restoring' } as const;
export type VolumeState = (typeof VolumeState)[keyof typeof VolumeState];

/** How a person reads a state: `ready`, `unavailable: backing file ... changed (...)`. */
export function formatState(state: string, reason: string | null): string {
  return reason === null ? state : `${state}: ${reason}`;
}

// Defined once with the views the control socket answers (view-types.d.ts).
export type { RestoreStatus } from './view-types.d.ts';

/** A volume's state as a person reads it: `restoring 37%` while an instant restore fills it. */
export function formatVolumeState(v: { state: string; reason: string | null; restore?: RestoreStatus }): string {
  if (v.restore === undefined) return formatState(v.state, v.reason);
  return `${VolumeState.Restoring} ${v.restore.percent}%${v.restore.stalled !== null ? ` (stalled: ${v.restore.stalled})` : ''}`;
}

/** The ways forward for a volume refused for its backing file, stated wherever the refusal is. */
export function backingAdvice(volume: string): string {
  return `put the original file back and restart the server; or, once you are sure the change is harmless, ` +
    `'snapnbd volume accept-backing ${volume}' (dangerous: the volume's data was written over the old image); ` +
    `or delete the volume`;
}

/** What an NBD client asking for an unavailable export is told. */
export function unavailableExportMessage(exportName: string, volume: string, reason: string): string {
  return `export '${exportName}' is unavailable: ${reason}; ${backingAdvice(volume)}`;
}
