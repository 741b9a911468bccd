// The JSON the control socket answers about volumes, snapshots and their space history: one
// definition for the server (src/volumes/views.ts re-exports it) and the web console's browser
// code (src/http/console/browser/, built by tsconfig.console.json), which cannot import server
// modules. A declaration file because both builds take it without emitting it; it may hold
// types only and import nothing (the browser build would have to compile what it imports).

/** `restoring`: a volume an instant restore is still filling (the restore work, with `restore` below). */
export type VolumeStateName = 'ready' | 'unavailable' | 'restoring';
export type SnapshotStateName = 'creating' | 'ready' | 'deleting' | 'unavailable';

/** A snapshot as the control socket lists it. */
export interface SnapshotView {
  volume: string;
  name: string;
  created: string;
  state: SnapshotStateName;
  /** Why it is `unavailable` (its volume's backing file changed), else null. */
  reason: string | null;
  description: string;
  size: number;
  referenced: number;
  used: number;
  written: number;
  /** Export names of this snapshot that have NBD connections now (e.g. ["vm1@s1"]). */
  exports: string[];
  connections: number;
  /** Volumes cloned from this snapshot. */
  clones: string[];
  /** Backup state (`backing-up 42%`, `backed-up`, `failed: reason`); absent when it has none. */
  backup?: string;
  /** Identity (32 hex digits; '' while being created): what incremental streams check. */
  guid: string;
}

/** An instant restore still filling a volume (served meanwhile). */
export interface RestoreStatus {
  percent: number;
  /** Why the background restore is stalled (it retries), else null. */
  stalled: string | null;
  job: string;
  backup: string;
  target: string;
}

/** A volume as the control socket lists it. */
export interface VolumeView {
  name: string;
  size: number;
  chunkSize: number;
  backing: string | null;
  origin: { volume: string; snapshot: string } | null;
  created: string;
  /** `ready`, or `unavailable` (not served: see `reason`). */
  state: VolumeStateName;
  /** Why it is `unavailable` (backing file changed or missing, and what changed), else null. */
  reason: string | null;
  /** Present while an instant restore fills it (state `restoring`). */
  restore?: RestoreStatus;
  snapshots: number;
  referenced: number;
  used: number;
  written: number;
  readOnly: boolean;
  /** NBD connections to the head now. */
  connections: number;
}

/** One sample of a volume's space (src/volumes/space-history.ts). */
export interface SpaceSample {
  at: string;
  used: number;
  referenced: number;
  written: number;
}

/** volume.history: the samples, oldest first. */
export interface VolumeHistory {
  volume: string;
  /** null: this server keeps no history. */
  intervalSeconds: number | null;
  samples: SpaceSample[];
}
