// The listing half of the volume registry (registry.ts): NBD_OPT_LIST from the export catalog,
// volume and snapshot pages for the control socket (built in slices that yield the event loop),
// the views they answer with, and the server stats. It reads the store (whose space figures are
// counters, storage/space.ts), the catalog, the pending snapshots (operations.ts owns them) and
// the lease table; it changes nothing.
import type { ExportDescription } from '../server/exports.ts';
import { checkName, StoreError, StoreErrorCode, type SnapshotInfo, type Store, type StoreStats, type VolumeInfo } from '../storage/types.ts';
import { formatSize } from '../util/size.ts';
import { walkNow, walkSliced, type Slicer, type Walk } from '../util/slice.ts';
import { exportNameOf, parseExportName } from './export-name.ts';
import { compareNames, type CatalogSnapshot, type CatalogVolume, type ExportCatalog } from './export-catalog.ts';
import type { LeaseTable } from './leases.ts';
import { VolumeState, type RestoreStatus } from './state.ts';
import { SnapshotState, type ExportStats, type ListPage, type RegistryStats, type SnapshotView, type VolumeView } from './views.ts';

/** A snapshot being created or deleted (listed as such; its export name resolves to nothing). */
export interface PendingSnapshot {
  state: SnapshotState;
  volume: string;
  name: string;
  description: string;
  started: Date;
  /** Deleting: the snapshot as it was, listed while the store, which dropped it first, commits. */
  info?: SnapshotInfo;
}

/** What the listing reads of the registry. */
export interface ListingContext {
  readonly store: Store;
  readonly catalog: ExportCatalog;
  /** Keyed by export name `VOLUME@SNAPSHOT`. */
  readonly pending: ReadonlyMap<string, PendingSnapshot>;
  readonly leases: LeaseTable;
  readonly opts: { readonly readOnly: boolean; readonly listSnapshots?: boolean | undefined };
  /** The `backup` field of snapshot views (null: none set). */
  annotator(): ((volume: string, snapshot: string) => string | null) | null;
  /** Volumes an instant restore still fills (null: none set). */
  restoring(): ((volume: string) => RestoreStatus | null) | null;
}

/** Entries looked up between two chances to yield in a sliced page (volume.list, snapshot.list). */
export const LIST_SLICE_ENTRIES = 256;

export interface VolumePage { volumes: VolumeView[]; next: string | null }
export interface SnapshotPage { snapshots: SnapshotView[]; next: string | null }

export class RegistryListing {
  private readonly ctx: ListingContext;

  constructor(ctx: ListingContext) {
    this.ctx = ctx;
  }

  /** From the catalog: no block map is walked, whatever the number of exports. */
  list(): ExportDescription[] {
    const out: ExportDescription[] = [];
    const volumes = [...this.ctx.catalog.volumes()];
    for (const v of volumes) out.push({ name: v.name, description: this.describeVolume(v) });
    if (this.ctx.opts.listSnapshots === false) return out;
    for (const v of volumes) {
      for (const s of v.snapshots.values()) {
        if (this.ctx.pending.get(exportNameOf(v.name, s.name))?.state === SnapshotState.Deleting) continue;
        out.push({ name: exportNameOf(v.name, s.name), description: this.describeSnapshot(s) });
      }
    }
    return out;
  }

  /**
   * Volumes in name order, `limit` of them after the name `after`; `next` is the `after` of the
   * following page (null: none). Space figures are computed for this page only.
   */
  volumePage(page: ListPage = {}): VolumePage {
    return walkNow(this.volumeWalk(page, Infinity));
  }

  /** `volumePage` built LIST_SLICE_ENTRIES at a time, yielding the event loop (volume.list). */
  volumePageSliced(page: ListPage = {}, slicer?: Slicer): Promise<VolumePage> {
    return walkSliced(this.volumeWalk(page, LIST_SLICE_ENTRIES), slicer);
  }

  /**
   * Snapshots oldest first (then those being created), `limit` of them after the snapshot `after`
   * (which must still exist); `next` is the `after` of the following page (null: none).
   */
  snapshotPage(volume: string, page: ListPage = {}): SnapshotPage {
    return walkNow(this.snapshotWalk(volume, page, Infinity));
  }

  /** `snapshotPage` built LIST_SLICE_ENTRIES at a time, yielding the event loop (snapshot.list). */
  snapshotPageSliced(volume: string, page: ListPage = {}, slicer?: Slicer): Promise<SnapshotPage> {
    return walkSliced(this.snapshotWalk(volume, page, LIST_SLICE_ENTRIES), slicer);
  }

  /**
   * The names are taken when the walk starts; each is looked up when its slice comes, and one
   * deleted meanwhile is left out (the page then reaches further, to `limit` entries if there
   * are as many). `next` is the last name listed, which existed when it was listed.
   */
  private *volumeWalk(page: ListPage, slice: number): Walk<VolumePage> {
    const names = this.ctx.catalog.volumeNames();
    const after = page.after;
    let start = 0;
    if (after !== undefined) {
      // First name > after (binary search: the names are sorted).
      let hi = names.length;
      while (start < hi) {
        const mid = (start + hi) >>> 1;
        if (compareNames(names[mid]!, after) <= 0) start = mid + 1;
        else hi = mid;
      }
    }
    const limit = page.limit ?? names.length;
    const volumes: VolumeView[] = [];
    let i = start;
    while (i < names.length && volumes.length < limit) {
      if (i > start) yield;
      for (const end = Math.min(names.length, i + slice); i < end && volumes.length < limit; i++) {
        const info = this.volumeIfAny(names[i]!);
        if (info) volumes.push(this.volumeView(info));
      }
    }
    return { volumes, next: i < names.length ? volumes.at(-1)?.name ?? null : null };
  }

  /** Null when the volume is gone (deleted while a sliced walk yielded). */
  private volumeIfAny(name: string): VolumeInfo | null {
    try {
      return this.ctx.store.volumeInfo(name);
    } catch (e) {
      if (e instanceof StoreError && e.code === StoreErrorCode.VolumeNotFound) return null;
      throw e;
    }
  }

  /**
   * As `volumeWalk`. Each slice asks the store for its names only (space figures for this page
   * only). A name is listed from the store, else from its pending entry (a snapshot being deleted,
   * which the store dropped before its commit: as it was; one being created: `creating`), else
   * left out (gone). The volume deleted meanwhile ends the walk with VOLUME_NOT_FOUND.
   */
  private *snapshotWalk(volume: string, page: ListPage, slice: number): Walk<SnapshotPage> {
    checkName('volume', volume);
    this.ctx.store.volumeInfo(volume); // VOLUME_NOT_FOUND
    const names = [...(this.ctx.catalog.volume(volume)?.snapshots.keys() ?? [])];
    const known = new Set(names);
    for (const p of this.ctx.pending.values()) {
      if (p.volume !== volume || p.state !== SnapshotState.Creating || known.has(p.name)) continue;
      names.push(p.name);
    }
    let start = 0;
    if (page.after !== undefined) {
      start = names.indexOf(page.after) + 1;
      if (start === 0) {
        throw new StoreError(StoreErrorCode.SnapshotNotFound,
          `snapshot '${exportNameOf(volume, page.after)}' (where this page starts) no longer exists; list again from the start`);
      }
    }
    const limit = page.limit ?? names.length;
    const snapshots: SnapshotView[] = [];
    let i = start;
    while (i < names.length && snapshots.length < limit) {
      if (i > start) yield;
      const batch = names.slice(i, i + Math.min(slice, limit - snapshots.length));
      const infos = new Map(this.ctx.store.listSnapshots(volume, new Set(batch)).map((s) => [s.name, s]));
      const volumeSize = batch.length > infos.size ? this.ctx.store.volumeInfo(volume).size : 0;
      for (const n of batch) {
        const view = this.snapshotEntry(volume, n, infos.get(n), volumeSize);
        if (view) snapshots.push(view);
      }
      i += batch.length;
    }
    return { snapshots, next: i < names.length ? snapshots.at(-1)?.name ?? null : null };
  }

  private snapshotEntry(volume: string, name: string, info: SnapshotInfo | undefined, volumeSize: number): SnapshotView | null {
    if (info) return this.snapshotView(info);
    const p = this.ctx.pending.get(exportNameOf(volume, name));
    if (p?.state === SnapshotState.Deleting && p.info) return this.snapshotView(p.info);
    if (p?.state !== SnapshotState.Creating) return null;
    return {
      volume, name: p.name, created: p.started.toISOString(), state: SnapshotState.Creating, reason: null,
      description: p.description, size: volumeSize, referenced: 0, used: 0, written: 0,
      exports: [], connections: 0, clones: [], guid: '',
    };
  }

  stats(): RegistryStats {
    return this.statsWith(this.ctx.store.stats());
  }

  /** `stats()` with the store's figures gathered in slices that yield the event loop (server.stats). */
  async statsSliced(): Promise<RegistryStats> {
    const store = await (this.ctx.store.statsSliced?.() ?? this.ctx.store.stats());
    return this.statsWith(store);
  }

  private statsWith(store: StoreStats): RegistryStats {
    const volumes = this.ctx.store.listVolumes();
    const exports: ExportStats[] = [];
    const seen = new Set<string>();
    for (const v of volumes) {
      seen.add(v.name);
      exports.push({ name: v.name, volume: v.name, snapshot: null, ...this.ctx.leases.countersOf(v.name) });
    }
    for (const [name, c] of this.ctx.leases.sortedCounters()) {
      if (seen.has(name)) continue;
      const { volume, snapshot } = parseExportName(name);
      exports.push({ name, volume, snapshot, ...c });
    }
    return {
      exports,
      volumes: volumes.map((v) => ({ name: v.name, size: v.size, ...v.space, snapshots: v.snapshots, ...this.volumeState(v) })),
      store,
    };
  }

  /** `restoring` (with its progress) while an instant restore fills the volume. */
  private volumeState(v: VolumeInfo): { state: VolumeState; reason: string | null; restore?: RestoreStatus } {
    const r = v.unavailable === null ? this.ctx.restoring()?.(v.name) ?? null : null;
    return r === null ? stateOf(v) : { state: VolumeState.Restoring, reason: r.stalled, restore: r };
  }

  volumeView(v: VolumeInfo): VolumeView {
    return {
      name: v.name, size: v.size, chunkSize: v.chunkSize, backing: v.backing, origin: v.origin,
      created: v.created,
      ...this.volumeState(v),
      snapshots: v.snapshots,
      referenced: v.space.referenced, used: v.space.used, written: v.space.written,
      readOnly: this.ctx.opts.readOnly,
      connections: this.ctx.leases.connections(v.name),
    };
  }

  snapshotView(s: SnapshotInfo, state?: SnapshotState): SnapshotView {
    const key = exportNameOf(s.volume, s.name);
    const connections = this.ctx.leases.connections(key);
    const backup = this.ctx.annotator()?.(s.volume, s.name) ?? null;
    return {
      volume: s.volume, name: s.name, created: s.created,
      state: state ?? this.ctx.pending.get(key)?.state
        ?? (s.unavailable !== null ? SnapshotState.Unavailable : s.durable ? SnapshotState.Ready : SnapshotState.Creating),
      reason: s.unavailable,
      description: s.description, size: s.size,
      referenced: s.space.referenced, used: s.space.used, written: s.space.written,
      exports: connections > 0 ? [key] : [],
      connections,
      clones: s.clones,
      ...(backup !== null ? { backup } : {}),
      guid: s.guid,
    };
  }

  describeVolume(v: CatalogVolume): string {
    const parts = [formatSize(v.size)];
    if (v.backing !== null) parts.push(`backing ${v.backing}`);
    if (v.origin !== null) parts.push(`clone of ${exportNameOf(v.origin.volume, v.origin.snapshot)}`);
    const n = v.snapshots.size;
    parts.push(`${n} snapshot${n === 1 ? '' : 's'}`);
    if (this.ctx.opts.readOnly) parts.push('read-only');
    if (v.unavailable !== null) parts.push(`UNAVAILABLE: ${v.unavailable}`);
    return `volume ${v.name}: ${parts.join(', ')}`;
  }

  describeSnapshot(s: CatalogSnapshot): string {
    const text = `${formatSize(s.size)} snapshot of ${s.volume} taken ${s.created}, read-only`
      + (s.unavailable !== null ? `, UNAVAILABLE: ${s.unavailable}` : '');
    return s.description === '' ? text : `${text}: ${s.description}`;
  }
}

function stateOf(v: VolumeInfo): { state: VolumeState; reason: string | null } {
  return { state: v.unavailable === null ? VolumeState.Ready : VolumeState.Unavailable, reason: v.unavailable };
}
