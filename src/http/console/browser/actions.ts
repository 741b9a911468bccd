// The console's actions, each one control method called through a dialog: what is lost is said
// before, the server's refusal (with its code) after, and force offered where the method has it.
import { rpc, type RpcFailure } from './api.ts';
import { openDialog, showText } from './dialogs.ts';
import { formatSize, formatTime, h, plural } from './dom.ts';
import type { Snapshot, Volume } from './model.ts';

/** NAME_PATTERN of the server (src/storage/types.ts), for the browser's own hint only. */
const NAME_HTML_PATTERN = '[A-Za-z0-9_][A-Za-z0-9._\\-]{0,127}';
const DESCRIPTION_MAX = 1024;

const busyForce = (label: string) => (e: RpcFailure): string | null => (e.code === 'VOLUME_BUSY' ? label : null);

export function takeSnapshot(volume: string): void {
  openDialog({
    title: `Take a snapshot of ${volume}`,
    body: ['A consistent point in time of every connection\'s writes, durable once it shows as ready.'],
    fields: [
      { name: 'name', label: 'Name (optional)', placeholder: 'generated when empty', pattern: NAME_HTML_PATTERN, maxLength: 128,
        hint: 'Letters, digits, . _ - ; left empty, the server names it after the volume and the time.' },
      { name: 'description', label: 'Description (optional)', maxLength: DESCRIPTION_MAX },
    ],
    confirm: 'Take snapshot',
    async run(v) {
      const params: Record<string, unknown> = { volume };
      if (v.name) params.name = v.name;
      if (v.description) params.description = v.description;
      const s = await rpc<Snapshot>('snapshot.create', params);
      return `Snapshot ${volume}@${s.name} taken`;
    },
  });
}

export function deleteVolume(v: Volume, snaps: Snapshot[]): void {
  const clones = snaps.flatMap((s) => s.clones);
  openDialog({
    title: `Delete volume ${v.name}?`,
    body: [
      h('p', {}, `Its data (${formatSize(v.size)} disk, ${formatSize(v.used)} used by it alone) is lost`,
        snaps.length > 0 ? `, with its ${plural(snaps.length, 'snapshot')}: ${snaps.map((s) => s.name).join(', ')}.` : '.'),
      clones.length > 0 ? h('p', {}, `Clones made from its snapshots are kept: ${clones.join(', ')}.`) : null,
      v.connections > 0 ? h('p', { class: 'warn' }, `${plural(v.connections, 'NBD client')} connected to it now.`) : null,
    ],
    confirm: `Delete ${v.name}`,
    danger: true,
    forceLabel: busyForce('Disconnect clients and delete'),
    async run(_v, force) {
      const r = await rpc<{ disconnected: number }>('volume.delete', { name: v.name, force });
      if (location.hash === `#/volume/${encodeURIComponent(v.name)}`) location.hash = '#/';
      return `Volume ${v.name} deleted${r.disconnected > 0 ? ` (${plural(r.disconnected, 'client')} disconnected)` : ''}`;
    },
  });
}

export function rollback(v: Volume, s: Snapshot): void {
  openDialog({
    title: `Roll back ${v.name} to ${s.name}?`,
    body: [
      h('p', {}, `${v.name} becomes what it was at ${formatTime(s.created)}. Everything written to it since is lost. Snapshots are kept.`),
      v.connections > 0 ? h('p', { class: 'warn' }, `${plural(v.connections, 'NBD client')} connected to ${v.name} now: a rollback under a mounted file system is refused unless they are disconnected.`) : null,
    ],
    confirm: 'Roll back',
    danger: true,
    forceLabel: busyForce('Disconnect clients and roll back'),
    async run(_v, force) {
      const r = await rpc<{ disconnected: number }>('snapshot.rollback', { volume: v.name, name: s.name, force });
      return `${v.name} rolled back to ${s.name}${r.disconnected > 0 ? ` (${plural(r.disconnected, 'client')} disconnected)` : ''}`;
    },
  });
}

export function cloneSnapshot(s: Snapshot): void {
  openDialog({
    title: `Clone ${s.volume}@${s.name}`,
    body: ['A new writable volume with the snapshot\'s content. It shares the snapshot\'s data (nothing is copied) and is independent from then on.'],
    fields: [{ name: 'name', label: 'New volume name', required: true, pattern: NAME_HTML_PATTERN, maxLength: 128 }],
    confirm: 'Clone',
    async run(v) {
      const c = await rpc<Volume>('volume.clone', { volume: s.volume, snapshot: s.name, name: v.name });
      return `Volume ${c.name} cloned from ${s.volume}@${s.name}`;
    },
  });
}

export function deleteSnapshot(s: Snapshot): void {
  openDialog({
    title: `Delete snapshot ${s.volume}@${s.name}?`,
    body: [
      h('p', {}, `The point in time of ${formatTime(s.created)} is lost; ${formatSize(s.used)} held by it alone is given back. The volume keeps its current data.`),
      s.clones.length > 0 ? h('p', {}, `Its clones are kept: ${s.clones.join(', ')}.`) : null,
      s.connections > 0 ? h('p', { class: 'warn' }, `It is exported to ${plural(s.connections, 'NBD client')} now: deleting it is refused until they disconnect.`) : null,
    ],
    confirm: `Delete ${s.name}`,
    danger: true,
    async run() {
      await rpc('snapshot.delete', { volume: s.volume, name: s.name });
      return `Snapshot ${s.volume}@${s.name} deleted`;
    },
  });
}

export async function copyUri(uri: string, toast: (t: string) => void): Promise<void> {
  try {
    await navigator.clipboard.writeText(uri);
    toast(`Copied ${uri}`);
  } catch {
    showText('NBD URI', 'Copy this URI', uri); // no clipboard access (permissions, or not a secure context)
  }
}
