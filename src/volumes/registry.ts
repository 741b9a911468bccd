// The volume registry: joins the NBD server and the storage engine. It resolves export names
// (export-name.ts) to block devices, tracks who holds each export (leases.ts), and wraps the
// engine's operations with the busy rules the control socket promises:
//   - rollback refuses a volume whose head is exported (VOLUME_BUSY) unless forced; forced, it
//     revokes those leases (the sessions finish in-flight requests and close) and waits for them;
//   - deleting an exported snapshot is refused (SNAPSHOT_BUSY);
//   - deleting an exported volume is refused (VOLUME_BUSY) unless forced;
//   - deleting a volume that has snapshots needs `withSnapshots` (VOLUME_HAS_SNAPSHOTS);
//   - a snapshot held by a running job (a backup reading it) cannot be deleted (SNAPSHOT_BUSY),
//     nor can its volume (VOLUME_BUSY, even forced), until the job ends or is cancelled.
// A volume whose backing file changed is kept and listed as `unavailable` with the reason
// (state.ts); NBD clients asking for it are told that reason instead of "unknown export".
// Changes to one volume are serialised (KeyedMutex); different volumes proceed in parallel.
// What it answers (VolumeView, SnapshotView, ...) is declared in views.ts; LIST and INFO come
// from export-catalog.ts; listing, paging, the views and stats live in listing.ts. Longer than a
// few hundred lines because every busy rule sits beside the operation it guards.
import type { BlockDevice } from '../storage/device.ts';
import {
  checkName, isValidName, StoreError, StoreErrorCode,
  type DiffPage, type SnapshotInfo, type Store, type VolumeInfo, type VolumeSpec,
} from '../storage/types.ts';
import type { ExportDescription, ExportLease, ExportResolver, ResolvedExport } from '../server/exports.ts';
import { exportNameOf, generatedSnapshotBase, isValidExportName, parseExportName, uniqueName } from './export-name.ts';
import { ExportCatalog } from './export-catalog.ts';
import { KeyedMutex } from './keyed-mutex.ts';
import { describeHolders, LeaseTable, REVOKE_WAIT_MS } from './leases.ts';
import { ReadOnlyDevice } from './read-only-device.ts';
import { unavailableExportMessage, type RestoreStatus } from './state.ts';
import { RegistryListing, type PendingSnapshot } from './listing.ts';
import { SnapshotState, type ListPage, type RegistryStats, type SnapshotView, type VolumeDeleted, type VolumeView } from './views.ts';
import { timed, type OperationMetrics } from '../util/operation-metrics.ts';

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
  private readonly mutex = new KeyedMutex();
  private readonly leases: LeaseTable;
  /** Keyed by export name `VOLUME@SNAPSHOT`. */
  private readonly pending = new Map<string, PendingSnapshot>();
  /** Volumes whose head may not be acquired now (forced rollback or delete in progress). */
  private readonly fenced = new Set<string>();
  private readonly readOnlyWrappers = new WeakMap<BlockDevice, ReadOnlyDevice>();
  private readonly releaseWaiters = new Set<() => void>();
  /** Export name `VOLUME@SNAPSHOT` -> why it is held (e.g. "backup job j3"). */
  private readonly holds = new Map<string, string[]>();
  private annotate: ((volume: string, snapshot: string) => string | null) | null = null;
  private restoring: ((volume: string) => RestoreStatus | null) | null = null;
  private readonly catalog: ExportCatalog;
  private readonly listing: RegistryListing;
  private closing = false;

  constructor(store: Store, opts: RegistryOptions) {
    this.store = store;
    this.opts = opts;
    this.leases = new LeaseTable(opts.revokeWaitMs ?? REVOKE_WAIT_MS);
    this.catalog = new ExportCatalog(store);
    this.listing = new RegistryListing({
      store, catalog: this.catalog, pending: this.pending, leases: this.leases, opts, annotator: () => this.annotate, restoring: () => this.restoring,
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
      if (this.pending.has(real)) return undefined; // being created or deleted
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
    if (snapshot === null && this.fenced.has(volume)) return undefined;
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

  /** Keeps the snapshot from being deleted until the returned release is called. */
  holdSnapshot(volume: string, name: string, reason: string): () => void {
    this.store.snapshotInfo(volume, name); // SNAPSHOT_NOT_FOUND
    const key = exportNameOf(volume, name);
    if (this.pending.get(key)?.state === SnapshotState.Deleting) {
      throw new StoreError(StoreErrorCode.SnapshotBusy, `snapshot '${key}' is being deleted`);
    }
    const list = this.holds.get(key) ?? [];
    list.push(reason);
    this.holds.set(key, list);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const l = this.holds.get(key) ?? [];
      l.splice(l.indexOf(reason), 1);
      if (l.length === 0) this.holds.delete(key);
    };
  }

  /** Adds the `backup` field to snapshot views (the backup manager's state). */
  setSnapshotAnnotator(fn: (volume: string, snapshot: string) => string | null): void {
    this.annotate = fn;
  }

  /** Marks volumes that an instant restore still fills (state `restoring`, and its progress). */
  setVolumeAnnotator(fn: (volume: string) => RestoreStatus | null): void {
    this.restoring = fn;
  }

  // ---- volumes ----

  /** Volumes in name order (listing.ts pages them). */
  listVolumes(): VolumeView[] {
    return this.listing.volumePage().volumes;
  }

  /**
   * Volumes in name order, `limit` of them after the name `after`; `next` is the `after` of the
   * following page (null: none).
   */
  volumePage(page: ListPage = {}): { volumes: VolumeView[]; next: string | null } {
    return this.listing.volumePage(page);
  }

  volumeInfo(name: string): VolumeView {
    checkName('volume', name);
    return this.volumeView(this.store.volumeInfo(name));
  }

  async createVolume(spec: VolumeSpec): Promise<VolumeView> {
    checkName('volume', spec.name);
    return this.mutex.run([spec.name], async () => {
      const info = await this.tracked([spec.name], () => this.store.createVolume(spec));
      this.catalog.addVolume(info);
      return this.volumeView(info);
    });
  }

  /**
   * Deletes a volume and its snapshots; clones survive. Refused while exported unless `force`, and
   * while it has snapshots unless `withSnapshots` (the refusal names them and the clones that
   * would survive). Returns what was destroyed.
   */
  async deleteVolume(name: string, force: boolean, withSnapshots = false): Promise<VolumeDeleted> {
    checkName('volume', name);
    return this.mutex.run([name], async () => {
      this.store.volumeInfo(name); // VOLUME_NOT_FOUND before anything else
      const jobHolds = [...this.holds].filter(([k]) => parseExportName(k).volume === name);
      if (jobHolds.length > 0) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${name}' has snapshots in use by ${jobHolds.flatMap(([, r]) => r).join(', ')}; cancel first`);
      }
      const snaps = this.store.listSnapshots(name);
      const clones = snaps.flatMap((s) => s.clones.map((c) => `${c} (from ${exportNameOf(name, s.name)})`));
      const held = this.leases.where((l) => l.volume === name);
      if (held.length > 0 && !force) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${name}' has ${held.length} NBD connection(s) (${describeHolders(held)}); disconnect them or use force`);
      }
      if (snaps.length > 0 && !withSnapshots) {
        throw new StoreError(StoreErrorCode.VolumeHasSnapshots,
          `volume '${name}' has ${snaps.length} snapshot(s) (${snaps.map((s) => s.name).join(', ')}), which deleting it would delete too; ` +
          `confirm with --with-snapshots (control: "withSnapshots": true)` +
          (clones.length > 0 ? `; these clones would survive: ${clones.join(', ')}` : '; no clone depends on them'));
      }
      this.fenced.add(name);
      try {
        await this.leases.revokeAndWait(held, `volume '${name}' is being deleted`);
        await this.tracked([name], () => this.store.deleteVolume(name));
        this.catalog.removeVolume(name);
      } finally {
        this.fenced.delete(name);
      }
      this.leases.forgetCounters((key) => parseExportName(key).volume === name);
      return { disconnected: held.length, snapshots: snaps.map((s) => s.name), clones: snaps.flatMap((s) => s.clones) };
    });
  }

  /**
   * Accepts the volume's backing file as it is now (see Store.acceptBacking: dangerous). Refused
   * with VOLUME_BUSY while NBD clients hold the volume or its snapshots.
   */
  async acceptBacking(name: string): Promise<VolumeView & { accepted: string | null }> {
    checkName('volume', name);
    return this.mutex.run([name], async () => {
      this.store.volumeInfo(name);
      const held = this.leases.where((l) => l.volume === name);
      if (held.length > 0) {
        throw new StoreError(StoreErrorCode.VolumeBusy, `volume '${name}' has ${held.length} NBD connection(s) (${describeHolders(held)}); disconnect them first`);
      }
      this.fenced.add(name);
      try {
        const r = await this.tracked([name], () => this.store.acceptBacking(name));
        this.catalog.invalidate(name); // its state changed
        return { ...this.volumeView(r.info), accepted: r.accepted };
      } finally {
        this.fenced.delete(name);
      }
    });
  }

  /**
   * Sets a volume's size (Store.resizeVolume). A grow works while NBD clients hold the volume:
   * their connections keep the size they negotiated (NBD cannot announce a new one) and see the
   * new size when they reconnect. A shrink (`shrink`) is refused with VOLUME_BUSY while clients
   * hold the head, and fences it meanwhile; snapshots and their exports keep their size.
   */
  async resizeVolume(name: string, size: number, shrink: boolean): Promise<VolumeView & { previousSize: number }> {
    checkName('volume', name);
    return this.mutex.run([name], async () => {
      const previousSize = this.store.volumeInfo(name).size; // VOLUME_NOT_FOUND before anything else
      const cut = size < previousSize && shrink;
      if (cut) {
        const held = this.leases.where((l) => l.volume === name && l.snapshot === null);
        if (held.length > 0) {
          throw new StoreError(StoreErrorCode.VolumeBusy,
            `volume '${name}' has ${held.length} NBD connection(s) to its head (${describeHolders(held)}); a volume is never shrunk while attached: disconnect them first`);
        }
        this.fenced.add(name);
      }
      try {
        const info = await this.tracked([name], () => this.store.resizeVolume(name, size, { shrink }));
        this.catalog.invalidate(name); // the size NBD_OPT_INFO/GO announce from now on
        return { ...this.volumeView(info), previousSize };
      } finally {
        if (cut) this.fenced.delete(name);
      }
    });
  }

  // ---- snapshots ----

  async createSnapshot(volume: string, name: string | undefined, description: string | undefined): Promise<SnapshotView> {
    checkName('volume', volume);
    if (name !== undefined) checkName('snapshot', name);
    return this.mutex.run([volume], async () => {
      this.store.volumeInfo(volume);
      const snapName = name ?? this.generateName(volume);
      const key = exportNameOf(volume, snapName);
      if (this.pending.has(key) || this.snapshotExists(volume, snapName)) {
        throw new StoreError(StoreErrorCode.NameTaken, `snapshot '${key}' already exists`);
      }
      this.pending.set(key, { state: SnapshotState.Creating, volume, name: snapName, description: description ?? '', started: this.now() });
      try {
        const info = await this.tracked([volume], () => timed(this.opts.operations, 'snapshot_create', () => this.store.createSnapshot(volume, snapName, description)));
        this.catalog.addSnapshot(info);
        return this.snapshotView(info, SnapshotState.Ready);
      } finally {
        this.pending.delete(key);
      }
    });
  }

  /** Snapshots oldest first, then those being created (listing.ts pages them). */
  listSnapshots(volume: string): SnapshotView[] {
    return this.listing.snapshotPage(volume).snapshots;
  }

  /**
   * Snapshots oldest first (then those being created), `limit` of them after the snapshot `after`
   * (which must still exist); `next` is the `after` of the following page (null: none).
   */
  snapshotPage(volume: string, page: ListPage = {}): { snapshots: SnapshotView[]; next: string | null } {
    return this.listing.snapshotPage(volume, page);
  }

  snapshotInfo(volume: string, name: string): SnapshotView {
    checkName('volume', volume);
    checkName('snapshot', name);
    return this.snapshotView(this.store.snapshotInfo(volume, name));
  }

  /** Refused with SNAPSHOT_BUSY while the snapshot is exported. Clones never depend on it. */
  async deleteSnapshot(volume: string, name: string): Promise<void> {
    checkName('volume', volume);
    checkName('snapshot', name);
    await this.mutex.run([volume], async () => {
      const info = this.store.snapshotInfo(volume, name);
      const key = exportNameOf(volume, name);
      const jobs = this.holds.get(key);
      if (jobs) {
        throw new StoreError(StoreErrorCode.SnapshotBusy,
          `snapshot '${key}' is in use by ${jobs.join(', ')}; cancel it first (snapnbd backup cancel JOB)`);
      }
      const held = this.leases.where((l) => l.exportName === key);
      if (held.length > 0) {
        throw new StoreError(StoreErrorCode.SnapshotBusy,
          `snapshot '${key}' is exported to ${held.length} NBD connection(s); disconnect them first`);
      }
      this.pending.set(key, { state: SnapshotState.Deleting, volume, name, description: info.description, started: this.now() });
      try {
        await this.tracked([volume], () => timed(this.opts.operations, 'snapshot_delete', () => this.store.deleteSnapshot(volume, name)));
        this.catalog.removeSnapshot(volume, name);
      } finally {
        this.pending.delete(key);
      }
      this.leases.forgetCounters((k) => k === key);
    });
  }

  /**
   * The head becomes the snapshot again; newer snapshots are kept. Refused with VOLUME_BUSY while
   * NBD clients hold the head, unless `force`: then they are disconnected cleanly first, because
   * data under a mounted filesystem must never change silently.
   */
  async rollback(volume: string, snapshot: string, force: boolean): Promise<{ disconnected: number }> {
    checkName('volume', volume);
    checkName('snapshot', snapshot);
    return this.mutex.run([volume], async () => {
      this.store.snapshotInfo(volume, snapshot); // not found before busy
      const held = this.leases.where((l) => l.volume === volume && l.snapshot === null);
      if (held.length > 0 && !force) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${volume}' has ${held.length} NBD connection(s) to its head; disconnect them or use force`);
      }
      // Fence in the same tick as the check: no session can slip in between.
      this.fenced.add(volume);
      try {
        await this.leases.revokeAndWait(held, `volume '${volume}' is being rolled back to snapshot '${snapshot}'`);
        await this.tracked([volume], () => this.store.rollback(volume, snapshot));
      } finally {
        this.fenced.delete(volume);
      }
      return { disconnected: held.length };
    });
  }

  /**
   * Runs `fn` on the store as the only user of `volume`: other changes to it wait, and its head
   * is fenced from NBD clients. Refused with VOLUME_BUSY while clients hold the head (imports).
   */
  async exclusive<T>(volume: string, fn: (store: Store) => Promise<T>): Promise<T> {
    checkName('volume', volume);
    return this.mutex.run([volume], async () => {
      const held = this.leases.where((l) => l.volume === volume && l.snapshot === null);
      if (held.length > 0) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${volume}' has ${held.length} NBD connection(s) to its head; disconnect them first`);
      }
      this.fenced.add(volume);
      try {
        return await fn(this.store);
      } finally {
        this.fenced.delete(volume);
        this.catalog.invalidate(volume); // fn changed the store behind the catalog's back
      }
    });
  }

  /**
   * Runs `fn` reading the given snapshots from the store, holding them as exports meanwhile (so
   * deleting one is refused with SNAPSHOT_BUSY; exports). `revoked` fires when the server stops.
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

  async clone(volume: string, snapshot: string, newName: string): Promise<VolumeView> {
    checkName('volume', volume);
    checkName('snapshot', snapshot);
    checkName('volume', newName);
    return this.mutex.run([volume, newName], async () => {
      const info = await this.tracked([newName], () => this.store.clone(volume, snapshot, newName));
      this.catalog.addVolume(info);
      return this.volumeView(info);
    });
  }

  async diff(volume: string, from: string, to: string | null, page: { start?: number; limit?: number }): Promise<DiffPage> {
    checkName('volume', volume);
    checkName('snapshot', from);
    if (to !== null) checkName('snapshot', to);
    return this.store.diff(volume, from, to, page);
  }

  stats(): RegistryStats {
    return this.listing.stats();
  }

  // ---- internals ----

  /** Runs a store change; if it fails, the catalog reloads the volumes it touched (it may be half done). */
  private async tracked<T>(volumes: string[], op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      for (const v of volumes) this.catalog.invalidate(v);
      throw e;
    }
  }

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

  private now(): Date {
    return this.opts.now ? this.opts.now() : new Date();
  }

  private snapshotExists(volume: string, name: string): boolean {
    try {
      this.store.snapshotInfo(volume, name);
      return true;
    } catch (e) {
      if (e instanceof StoreError && e.code === StoreErrorCode.SnapshotNotFound) return false;
      throw e;
    }
  }

  private generateName(volume: string): string {
    const base = generatedSnapshotBase(volume, this.now());
    const taken = new Set(this.store.listSnapshots(volume).map((s) => s.name));
    for (const p of this.pending.values()) if (p.volume === volume) taken.add(p.name);
    return uniqueName(base, taken);
  }

  private volumeView(v: VolumeInfo): VolumeView {
    return this.listing.volumeView(v);
  }

  private snapshotView(s: SnapshotInfo, state?: SnapshotState): SnapshotView {
    return this.listing.snapshotView(s, state);
  }
}
