// What the control socket answers about volumes, snapshots and the server, shared by the control
// methods (src/control/methods.ts) and the CLI (src/cli/control-commands.ts), which reads them
// back from JSON. Types only.
import type { ExportCounters } from '../server/exports.ts';
import type { StoreStats } from '../storage/types.ts';
import type { VolumeState } from './state.ts';
import type { SnapshotStateName, VolumeStateName } from './view-types.d.ts';

// The views themselves are defined once in view-types.d.ts, which the console's browser code shares.
export type { SnapshotView, VolumeView } from './view-types.d.ts';

export const SnapshotState = { Creating: 'creating', Ready: 'ready', Deleting: 'deleting', Unavailable: 'unavailable' } as const satisfies Record<string, SnapshotStateName>;
export type SnapshotState = SnapshotStateName;
/** Fails to compile unless A fits B (used to hold a type to the wire's definition). */
export type Fits<A extends B, B> = A;
/** state.ts's VolumeState is one of the wire's VolumeStateName. */
export type VolumeStateChecked = Fits<VolumeState, VolumeStateName>;

/** One page of a list: up to `limit` entries after the entry named `after`. */
export interface ListPage {
  after?: string | undefined;
  limit?: number | undefined;
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
