// The volume registry: joins the NBD server and the storage engine. It resolves export names
// (export-name.ts) to block devices, tracks who holds each export (leases.ts), and answers the
// control socket: the changes to volumes and snapshots, with the busy rules the control socket
// promises, are operations.ts; listing, paging, the views and stats are listing.ts; LIST and
// INFO come from export-catalog.ts. What it answers (VolumeView, SnapshotView, ...) is declared in
// views.ts.
// A volume whose backing file changed is kept and listed as `unavailable` with the reason
// (state.ts); NBD clients asking for it are told that reason instead of "unknown export".
import type { BlockDevice } from '../storage/device.ts';
import {
  checkName, isValidName, StoreError, StoreErrorCode,
  type DiffPage, type Store, type VolumeSpec,
} from '../storage/types.ts';
import type { ExportDescription, ExportLease, ExportResolver, ResolvedExport } from '../server/exports.ts';
import { exportNameOf, isValidExportName, parseExportName } from './export-name.ts';
import { ExportCatalog } from './export-catalog.ts';
import { LeaseTable, REVOKE_WAIT_MS } from './leases.ts';
import { VolumeOperations } from './operations.ts';
import { ReadOnlyDevice } from './read-only-device.ts';
import { unavailableExportMessage, type RestoreStatus } from './state.ts';
import { RegistryListing, type SnapshotPage, type VolumePage } from './listing.ts';
import type { Slicer } from '../util/slice.ts';
import type { ListPage, RegistryStats, SnapshotView, VolumeDeleted, VolumeView } from './views.ts';
import type { OperationMetrics } from '../util/operation-metrics.ts';

// Re-exported for callers that know only the registry.
export { exportNameOf, generatedSnapshotBase, parseExportName, SNAPSHOT_SEPARATOR } from './export-name.ts';
export { REVOKE_WAIT_MS } from './leases.ts';
export { SnapshotState, type ExportStats, type ListPage, type RegistryStats, type SnapshotView, type VolumeDeleted, type VolumeView } from './views.ts';
export { checkName, isValidName, NAME_MAX } from '../storage/types.ts';

export interface RegistryOptions {
  /** The volume the empty export name reaches. */
  defaultExport: string;
  /** Serve heads read-only too (`serve --read-only`). */
  readOnly: boolean;
  /** NBD_OPT_LIST names snapshots too (`serve --list-snapshots=no` sets false; they stay reachable). */
  listSnapshots?: boolean;
  /** Clock for generated snapshot names (tests pin it). */
  now?: () => Date;
  /** Override REVOKE_WAIT_MS (tests). */
  revokeWaitMs?: number;
  /** Records snapshot create/delete durations for the metrics endpoint. */
  operations?: OperationMetrics;
}

export class VolumeRegistry implements ExportResolver {
  private readonly store: Store;
  private readonly opts: RegistryOptions;
  private readonly leases: LeaseTable;
  private readonly readOnlyWrappers = new WeakMap<BlockDevice, ReadOnlyDevice>();
  private annotate: ((volume: string, snapshot: string) => string | null) | null = null;
  private restoring: ((volume: string) => RestoreStatus | null) | null = null;
  private readonly catalog: ExportCatalog;
  private readonly ops: VolumeOperations;
  private readonly listing: RegistryListing;
  private closing = false;

  constructor(store: Store, opts: RegistryOptions) {
    this.store = store;
    this.opts = opts;
    this.leases = new LeaseTable(opts.revokeWaitMs ?? REVOKE_WAIT_MS);
    this.catalog = new ExportCatalog(store);
    this.ops = new VolumeOperations({ store, catalog: this.catalog, leases: this.leases, opts, views: () => this.listing });
    this.listing = new RegistryListing({
      store, catalog: this.catalog, pending: this.ops.pending, leases: this.leases, opts, annotator: () => this.annotate, restoring: () => this.restoring,
    });
  }

  get defaultExport(): string {
    return this.opts.defaultExport;
  }

  get readOnly(): boolean {
    return this.opts.readOnly;
  }

  // ---- ExportResolver (the NBD server's side) ----

  /** From the catalog: no block map is walked, whatever the number of exports (listing.ts). */
  list(): ExportDescription[] {
    return this.listing.list();
  }

  lookup(name: string): ResolvedExport | undefined {
    const real = name === '' ? this.opts.defaultExport : name;
    const parts = parseExportName(real);
    if (!isValidExportName(parts)) return undefined;
    const { volume, snapshot } = parts;
    try {
      const v = this.catalog.volume(volume);
      if (!v) return undefined;
      if (snapshot === null) return { name: real, description: this.listing.describeVolume(v), device: this.headDevice(volume) };
      if (this.ops.pending.has(real)) return undefined; // being created or deleted
      const s = v.snapshots.get(snapshot);
      if (!s) return undefined;
      return { name: real, description: this.listing.describeSnapshot(s), device: this.store.snapshotView(volume, snapshot) };
    } catch (e) {
      if (e instanceof StoreError) return undefined;
      throw e;
    }
  }

  unavailable(name: string): string | undefined {
    const real = name === '' ? this.opts.defaultExport : name;
    const { volume, snapshot } = parseExportName(real);
    if (!isValidName(volume) || (snapshot !== null && !isValidName(snapshot))) return undefined;
    try {
      const reason = snapshot === null ? this.store.volumeInfo(volume).unavailable : this.store.snapshotInfo(volume, snapshot).unavailable;
      return reason === null ? undefined : unavailableExportMessage(real, volume, reason);
    } catch (e) {
      if (e instanceof StoreError) return undefined;
      throw e;
    }
  }

  acquire(name: string, onRevoke: (reason: string) => void): ExportLease | undefined {
    if (this.closing) return undefined;
    const resolved = this.lookup(name);
    if (!resolved) return undefined;
    const { volume, snapshot } = parseExportName(resolved.name);
    if (snapshot === null && this.ops.isFenced(volume)) return undefined;
    return { ...resolved, ...this.leases.add(resolved.name, onRevoke) };
  }

  /** Revokes every lease (server stopping) and waits until they are released or the wait ends. */
  async revokeAll(reason: string): Promise<void> {
    this.closing = true;
    const held = this.leases.all();
    for (const l of held) this.leases.revoke(l, reason);
    await this.leases.waitReleased(held).catch(() => undefined);
  }

  /** NBD connections holding `exportName` now. */
  connections(exportName: string): number {
    return this.leases.connections(exportName);
  }

  // ---- holds (jobs reading a snapshot) ----

  /** Keeps the snapshot from being deleted until the returned release is called (operations.ts). */
  holdSnapshot(volume: string, name: string, reason: string): () => void {
    return this.ops.holdSnapshot(volume, name, reason);
  }

  /** Adds the `backup` field to snapshot views (the backup manager's state). */
  setSnapshotAnnotator(fn: (volume: string, snapshot: string) => string | null): void {
    this.annotate = fn;
  }

  /** Marks volumes that an instant restore still fills (state `restoring`, and its progress). */
  setVolumeAnnotator(fn: (volume: string) => RestoreStatus | null): void {
    this.restoring = fn;
  }

  // ---- volumes (the changes: operations.ts, with their busy rules) ----

  /** Volumes in name order (listing.ts pages them). */
  listVolumes(): VolumeView[] {
    return this.listing.volumePage().volumes;
  }

  /**
   * Volumes in name order, `limit` of them after the name `after`; `next` is the `after` of the
   * following page (null: none). Built in slices that yield the event loop (volume.list).
   */
  volumePageSliced(page: ListPage = {}, slicer?: Slicer): Promise<VolumePage> {
    return this.listing.volumePageSliced(page, slicer);
  }

  volumeInfo(name: string): VolumeView {
    checkName('volume', name);
    return this.listing.volumeView(this.store.volumeInfo(name));
  }

  createVolume(spec: VolumeSpec): Promise<VolumeView> {
    return this.ops.createVolume(spec);
  }

  /** Deletes a volume and its snapshots (clones survive); refused while exported unless `force`. */
  deleteVolume(name: string, force: boolean, withSnapshots = false): Promise<VolumeDeleted> {
    return this.ops.deleteVolume(name, force, withSnapshots);
  }

  /** Accepts the volume's backing file as it is now (dangerous: Store.acceptBacking). */
  acceptBacking(name: string): Promise<VolumeView & { accepted: string | null }> {
    return this.ops.acceptBacking(name);
  }

  /** Sets a volume's size; a shrink is refused while NBD clients hold the head. */
  resizeVolume(name: string, size: number, shrink: boolean): Promise<VolumeView & { previousSize: number }> {
    return this.ops.resizeVolume(name, size, shrink);
  }

  // ---- snapshots (the changes: operations.ts) ----

  createSnapshot(volume: string, name: string | undefined, description: string | undefined): Promise<SnapshotView> {
    return this.ops.createSnapshot(volume, name, description);
  }

  /** Snapshots oldest first, then those being created (listing.ts pages them). */
  listSnapshots(volume: string): SnapshotView[] {
    return this.listing.snapshotPage(volume).snapshots;
  }

  /**
   * Snapshots oldest first (then those being created), `limit` of them after the snapshot `after`
   * (which must still exist); `next` is the `after` of the following page (null: none). Built in
   * slices that yield the event loop (snapshot.list).
   */
  snapshotPageSliced(volume: string, page: ListPage = {}, slicer?: Slicer): Promise<SnapshotPage> {
    return this.listing.snapshotPageSliced(volume, page, slicer);
  }

  snapshotInfo(volume: string, name: string): SnapshotView {
    checkName('volume', volume);
    checkName('snapshot', name);
    return this.listing.snapshotView(this.store.snapshotInfo(volume, name));
  }

  /** Refused with SNAPSHOT_BUSY while the snapshot is exported or held by a job. */
  deleteSnapshot(volume: string, name: string): Promise<void> {
    return this.ops.deleteSnapshot(volume, name);
  }

  /** The head becomes the snapshot again; refused with VOLUME_BUSY while exported unless `force`. */
  rollback(volume: string, snapshot: string, force: boolean): Promise<{ disconnected: number }> {
    return this.ops.rollback(volume, snapshot, force);
  }

  /** Runs `fn` on the store as the only user of `volume`, its head fenced from NBD clients. */
  exclusive<T>(volume: string, fn: (store: Store) => Promise<T>): Promise<T> {
    return this.ops.exclusive(volume, fn);
  }

  /**
   * Runs `fn` reading the given snapshots from the store, holding them as exports meanwhile (so
   * deleting one is refused with SNAPSHOT_BUSY; exports). `revoked` fires when the server stops.
   * Here, not in operations.ts: it takes leases as an NBD client does.
   */
  async holdingSnapshots<T>(volume: string, snapshots: string[], fn: (store: Store, revoked: AbortSignal) => Promise<T>): Promise<T> {
    checkName('volume', volume);
    const ac = new AbortController();
    const leases: ExportLease[] = [];
    try {
      for (const s of snapshots) {
        checkName('snapshot', s);
        const lease = this.acquire(exportNameOf(volume, s), (reason) => ac.abort(new Error(reason)));
        if (!lease) {
          this.store.snapshotInfo(volume, s); // VOLUME_NOT_FOUND / SNAPSHOT_NOT_FOUND
          throw new StoreError(StoreErrorCode.SnapshotBusy, `snapshot '${exportNameOf(volume, s)}' is being created or deleted, or the server is stopping`);
        }
        leases.push(lease);
      }
      return await fn(this.store, ac.signal);
    } finally {
      for (const l of leases) l.release();
    }
  }

  clone(volume: string, snapshot: string, newName: string): Promise<VolumeView> {
    return this.ops.clone(volume, snapshot, newName);
  }

  diff(volume: string, from: string, to: string | null, page: { start?: number; limit?: number }): Promise<DiffPage> {
    return this.ops.diff(volume, from, to, page);
  }

  stats(): RegistryStats {
    return this.listing.stats();
  }

  /** `stats()`, the store's figures gathered in slices that yield the event loop (server.stats). */
  statsSliced(): Promise<RegistryStats> {
    return this.listing.statsSliced();
  }

  // ---- internals ----

  private headDevice(volume: string): BlockDevice {
    const head = this.store.head(volume);
    if (!this.opts.readOnly || head.readOnly) return head;
    let ro = this.readOnlyWrappers.get(head);
    if (!ro) {
      ro = new ReadOnlyDevice(head);
      this.readOnlyWrappers.set(head, ro);
    }
    return ro;
  }
}
