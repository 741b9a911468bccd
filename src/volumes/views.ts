// What the control socket answers about volumes, snapshots and the server, shared by the control
// methods (src/control/methods.ts) and the CLI (src/cli/control-commands.ts), which reads them
// back from JSON. Types only.
import type { ExportCounters } from '../server/exports.ts';
import type { StoreStats } from '../storage/types.ts';
import type { RestoreStatus, VolumeState } from './state.ts';

export const SnapshotState = { Creating: 'creating', Ready: 'ready', Deleting: 'deleting', Unavailable: 'unavailable' } as const;
export type SnapshotState = (typeof SnapshotState)[keyof typeof SnapshotState];

/** One page of a list: up to `limit` entries after the entry named `after`. */
export interface ListPage {
  after?: string | undefined;
  limit?: number | undefined;
}

/** A snapshot as the control socket lists it. */
export interface SnapshotView {
  volume: string;
  name: string;
  created: string;
  state: SnapshotState;
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

/** A volume as the control socket lists it. */
export interface VolumeView {
  name: string;
  size: number;
  chunkSize: number;
  backing: string | null;
  origin: { volume: string; snapshot: string } | null;
  created: string;
  /** `ready`, or `unavailable` (not served: see `reason`). */
  state: VolumeState;
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

/** What volume.delete destroyed. */
export interface VolumeDeleted {
  disconnected: number;
  /** The snapshots deleted with it. */
  snapshots: string[];
  /** Volumes cloned from those snapshots: they survive. */
  clones: string[];
}

export interface ExportStats extends ExportCounters {
  name: string;
  volume: string;
  snapshot: string | null;
}

/** `server.stats`. */
export interface RegistryStats {
  exports: ExportStats[];
  volumes: { name: string; size: number; referenced: number; used: number; written: number; snapshots: number; state: VolumeState; reason: string | null }[];
  store: StoreStats;
}

/** `snapshot.diff`: one page of changed extents; `next` is the cursor of the following page. */
export interface DiffResult {
  volume: string;
  from: string;
  to: string | null;
  extents: { offset: number; length: number }[];
  next: string | null;
}
