// What the server's event stream carries and the pages read: the types are the server's own
// (src/http/console/wire.d.ts, shared with watch.ts); here only what the pages derive from them.
import type { SnapshotView, VolumeView } from '../wire.d.ts';

export type {
  BackupRow, ClientView, ConsoleState, HistoryView, JobRow, ScheduleRow, SnapshotView as Snapshot, SpaceSample, TargetView,
  VolumeView as Volume,
} from '../wire.d.ts';

export interface ServerInfo {
  version: string;
  listeners: string[];
}

/** The volume's state: `restoring N%` while an instant restore fills it, `snapshotting` while one of its snapshots is being created, else its own (with the reason). */
export function volumeState(v: VolumeView, snaps: SnapshotView[]): unknown {
  // `restoring 37%` (a fraction: stateText reads numbers up to 1 as one).
  if (v.restore) return { state: v.state, progress: v.restore.percent / 100, ...(v.restore.stalled !== null ? { reason: `stalled: ${v.restore.stalled}` } : {}) };
  if (v.state !== 'ready') return { state: v.state, reason: v.reason };
  return snaps.some((s) => s.state === 'creating') ? 'snapshotting' : v.state;
}

/** A snapshot's state: its backup's (`backing-up 42%`, `backed-up`, `failed: ...`) once it is ready and has one. */
export function snapshotState(s: SnapshotView): unknown {
  if (s.state !== 'ready') return { state: s.state, reason: s.reason };
  return s.backup ?? s.state;
}

/** The nbd:// URI of an export, from the server's first NBD listener. */
export function nbdUri(server: ServerInfo | null, exportName: string, pageHost: string): string | null {
  const l = server?.listeners.find((x) => x.startsWith('nbd '))?.slice(4);
  if (l === undefined) return null;
  if (l.startsWith('unix:')) return `nbd+unix:///${exportName}?socket=${l.slice(5)}`;
  const m = /^(.*):(\d+)$/.exec(l);
  if (!m) return null;
  let host = m[1]!;
  if (host === '0.0.0.0' || host === '[::]') host = pageHost;
  return `nbd://${host}:${m[2]}/${exportName}`;
}
