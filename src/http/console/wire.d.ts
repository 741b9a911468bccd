// What the console's event stream carries (src/http/console/watch.ts builds it from the control
// methods' own results) and what its pages read: one definition for the server and the browser
// code (src/http/console/browser/). A declaration file: both builds take it without emitting
// it. Backup and job rows are the fields the pages use of backup.list and job.list; watch.ts
// holds the server's types to them (Fits), so neither side can drift without a compile error.
import type { SnapshotView, VolumeView, VolumeHistory } from '../../volumes/view-types.d.ts';

export type { SnapshotView, VolumeView, VolumeHistory, SpaceSample } from '../../volumes/view-types.d.ts';

/** A live NBD connection (server.stats `connections`). */
export interface ClientView {
  peer: string;
  /** TLS identity names of the client's certificate or PSK ([] for none). */
  identity: string[];
  /** TLS version, null for a clear connection. */
  tls: string | null;
  export: string | null;
}

/** backup.targets. */
export interface TargetView {
  name: string;
  url: string;
  encrypted: boolean;
  /** Bytes per second backups may send to it (`?upload-limit=`), or null. */
  uploadLimit: number | null;
}

/** One entry of backup.list. */
export interface BackupRow {
  id: string;
  volume: string;
  snapshot: string;
  state: string;
  created: string;
  source: string;
  size: number;
  base: string | null;
  bytesUploaded: number;
  blocksReused: number;
  blocks: number;
}

/** One entry of job.list. */
export interface JobRow {
  id: string;
  kind: string;
  target: string;
  volume: string | null;
  snapshot: string | null;
  state: string;
  started: string;
  finished: string | null;
  bytesDone: number;
  bytesTotal: number;
  percent: number;
  error: { code: string; message: string } | null;
}

/** A schedule (schedule.list; the contract in protocol/control.md, "Schedules"). */
export interface ScheduleRow {
  id: string;
  volume: string;
  kind: 'hourly' | 'daily' | 'weekly' | 'monthly' | 'every';
  at?: string;
  every?: string;
  tz: string;
  keep: number;
  backupTo?: string;
  keepBackups?: number;
  nextRun: string;
  lastRun?: string;
  lastResult?: { ok: boolean; snapshot?: string; error?: string };
}

export interface ConsoleState {
  at: string;
  volumes: VolumeView[];
  /** snapshot.list's `snapshots` per volume name. */
  snapshots: Record<string, SnapshotView[]>;
  /** Live NBD connections per volume name (to its head or its snapshots). */
  clients: Record<string, ClientView[]>;
  /** Backup targets; [] when the server has none. */
  targets: TargetView[];
  /** backup.list per target name; a target that cannot be read is in backupErrors instead. */
  backups: Record<string, BackupRow[]>;
  backupErrors: Record<string, string>;
  jobs: JobRow[];
  /** schedule.list's schedules, or null when this server has no schedule methods. */
  schedules: ScheduleRow[] | null;
}

/** The shape history charts take (volume.history). */
export type HistoryView = VolumeHistory;
