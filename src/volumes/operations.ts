// The operations half of the volume registry (registry.ts): every change to volumes and
// snapshots, each with the busy rules the control socket promises beside it:
//   - rollback refuses a volume whose head is exported (VOLUME_BUSY) unless forced; forced, it
//     revokes those leases (the sessions finish in-flight requests and close) and waits for them;
//   - deleting an exported snapshot is refused (SNAPSHOT_BUSY);
//   - deleting an exported volume is refused (VOLUME_BUSY) unless forced;
//   - deleting a volume that has snapshots needs `withSnapshots` (VOLUME_HAS_SNAPSHOTS);
//   - a snapshot held by a running job (a backup reading it) cannot be deleted (SNAPSHOT_BUSY),
//     nor can its volume (VOLUME_BUSY, even forced), until the job ends or is cancelled.
// Changes to one volume are serialised (KeyedMutex); different volumes proceed in parallel. It
// owns the snapshots being created or deleted (`pending`), the volumes fenced from new NBD
// leases (`fenced`) and the job holds; the registry's resolver and the listing read them.
import {
  checkName, StoreError, StoreErrorCode,
  type DiffPage, type Store, type VolumeSpec,
} from '../storage/types.ts';
import { timed, type OperationMetrics } from '../util/operation-metrics.ts';
import { exportNameOf, generatedSnapshotBase, parseExportName, uniqueName } from './export-name.ts';
import type { ExportCatalog } from './export-catalog.ts';
import { KeyedMutex } from './keyed-mutex.ts';
import { describeHolders, type LeaseTable } from './leases.ts';
import type { PendingSnapshot, RegistryListing } from './listing.ts';
import { SnapshotState, type SnapshotView, type VolumeDeleted, type VolumeView } from './views.ts';

/** What the operations use of the registry. */
export interface OperationsContext {
  readonly store: Store;
  readonly catalog: ExportCatalog;
  readonly leases: LeaseTable;
  /** The views operations answer with (listing.ts; a function: the listing reads `pending`). */
  views(): Pick<RegistryListing, 'volumeView' | 'snapshotView'>;
  readonly opts: { readonly now?: (() => Date) | undefined; readonly operations?: OperationMetrics | undefined };
}

export class VolumeOperations {
  private readonly ctx: OperationsContext;
  private readonly mutex = new KeyedMutex();
  /** Keyed by export name `VOLUME@SNAPSHOT`. */
  private readonly pendingSnapshots = new Map<string, PendingSnapshot>();
  /** Volumes whose head may not be acquired now (forced rollback or delete in progress). */
  private readonly fencedVolumes = new Set<string>();
  /** Export name `VOLUME@SNAPSHOT` -> why it is held (e.g. "backup job j3"). */
  private readonly holds = new Map<string, string[]>();

  constructor(ctx: OperationsContext) {
    this.ctx = ctx;
  }

  /** Snapshots being created or deleted, by export name (listed as such; they resolve to nothing). */
  get pending(): ReadonlyMap<string, PendingSnapshot> {
    return this.pendingSnapshots;
  }

  /** The volume's head may not be acquired now. */
  isFenced(volume: string): boolean {
    return this.fencedVolumes.has(volume);
  }

  // ---- holds (jobs reading a snapshot) ----

  /** Keeps the snapshot from being deleted until the returned release is called. */
  holdSnapshot(volume: string, name: string, reason: string): () => void {
    this.ctx.store.snapshotInfo(volume, name); // SNAPSHOT_NOT_FOUND
    const key = exportNameOf(volume, name);
    if (this.pendingSnapshots.get(key)?.state === SnapshotState.Deleting) {
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

  // ---- volumes ----

  async createVolume(spec: VolumeSpec): Promise<VolumeView> {
    checkName('volume', spec.name);
    return this.mutex.run([spec.name], async () => {
      const info = await this.tracked([spec.name], () => this.ctx.store.createVolume(spec));
      this.ctx.catalog.addVolume(info);
      return this.ctx.views().volumeView(info);
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
      const { store, leases } = this.ctx;
      store.volumeInfo(name); // VOLUME_NOT_FOUND before anything else
      const jobHolds = [...this.holds].filter(([k]) => parseExportName(k).volume === name);
      if (jobHolds.length > 0) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${name}' has snapshots in use by ${jobHolds.flatMap(([, r]) => r).join(', ')}; cancel first`);
      }
      const snaps = store.listSnapshots(name);
      const clones = snaps.flatMap((s) => s.clones.map((c) => `${c} (from ${exportNameOf(name, s.name)})`));
      const held = leases.where((l) => l.volume === name);
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
      this.fencedVolumes.add(name);
      try {
        await leases.revokeAndWait(held, `volume '${name}' is being deleted`);
        await this.tracked([name], () => store.deleteVolume(name));
        this.ctx.catalog.removeVolume(name);
      } finally {
        this.fencedVolumes.delete(name);
      }
      leases.forgetCounters((key) => parseExportName(key).volume === name);
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
      this.ctx.store.volumeInfo(name);
      const held = this.ctx.leases.where((l) => l.volume === name);
      if (held.length > 0) {
        throw new StoreError(StoreErrorCode.VolumeBusy, `volume '${name}' has ${held.length} NBD connection(s) (${describeHolders(held)}); disconnect them first`);
      }
      this.fencedVolumes.add(name);
      try {
        const r = await this.tracked([name], () => this.ctx.store.acceptBacking(name));
        this.ctx.catalog.invalidate(name); // its state changed
        return { ...this.ctx.views().volumeView(r.info), accepted: r.accepted };
      } finally {
        this.fencedVolumes.delete(name);
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
      const previousSize = this.ctx.store.volumeInfo(name).size; // VOLUME_NOT_FOUND before anything else
      const cut = size < previousSize && shrink;
      if (cut) {
        const held = this.ctx.leases.where((l) => l.volume === name && l.snapshot === null);
        if (held.length > 0) {
          throw new StoreError(StoreErrorCode.VolumeBusy,
            `volume '${name}' has ${held.length} NBD connection(s) to its head (${describeHolders(held)}); a volume is never shrunk while attached: disconnect them first`);
        }
        this.fencedVolumes.add(name);
      }
      try {
        const info = await this.tracked([name], () => this.ctx.store.resizeVolume(name, size, { shrink }));
        this.ctx.catalog.invalidate(name); // the size NBD_OPT_INFO/GO announce from now on
        return { ...this.ctx.views().volumeView(info), previousSize };
      } finally {
        if (cut) this.fencedVolumes.delete(name);
      }
    });
  }

  async clone(volume: string, snapshot: string, newName: string): Promise<VolumeView> {
    checkName('volume', volume);
    checkName('snapshot', snapshot);
    checkName('volume', newName);
    return this.mutex.run([volume, newName], async () => {
      const info = await this.tracked([newName], () => this.ctx.store.clone(volume, snapshot, newName));
      this.ctx.catalog.addVolume(info);
      return this.ctx.views().volumeView(info);
    });
  }

  /**
   * Runs `fn` on the store as the only user of `volume`: other changes to it wait, and its head
   * is fenced from NBD clients. Refused with VOLUME_BUSY while clients hold the head (imports).
   */
  async exclusive<T>(volume: string, fn: (store: Store) => Promise<T>): Promise<T> {
    checkName('volume', volume);
    return this.mutex.run([volume], async () => {
      const held = this.ctx.leases.where((l) => l.volume === volume && l.snapshot === null);
      if (held.length > 0) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${volume}' has ${held.length} NBD connection(s) to its head; disconnect them first`);
      }
      this.fencedVolumes.add(volume);
      try {
        return await fn(this.ctx.store);
      } finally {
        this.fencedVolumes.delete(volume);
        this.ctx.catalog.invalidate(volume); // fn changed the store behind the catalog's back
      }
    });
  }

  // ---- snapshots ----

  async createSnapshot(volume: string, name: string | undefined, description: string | undefined): Promise<SnapshotView> {
    checkName('volume', volume);
    if (name !== undefined) checkName('snapshot', name);
    return this.mutex.run([volume], async () => {
      this.ctx.store.volumeInfo(volume);
      const snapName = name ?? this.generateName(volume);
      const key = exportNameOf(volume, snapName);
      if (this.pendingSnapshots.has(key) || this.snapshotExists(volume, snapName)) {
        throw new StoreError(StoreErrorCode.NameTaken, `snapshot '${key}' already exists`);
      }
      this.pendingSnapshots.set(key, { state: SnapshotState.Creating, volume, name: snapName, description: description ?? '', started: this.now() });
      try {
        const info = await this.tracked([volume], () => timed(this.ctx.opts.operations, 'snapshot_create', () => this.ctx.store.createSnapshot(volume, snapName, description)));
        this.ctx.catalog.addSnapshot(info);
        return this.ctx.views().snapshotView(info, SnapshotState.Ready);
      } finally {
        this.pendingSnapshots.delete(key);
      }
    });
  }

  /** Refused with SNAPSHOT_BUSY while the snapshot is exported. Clones never depend on it. */
  async deleteSnapshot(volume: string, name: string): Promise<void> {
    checkName('volume', volume);
    checkName('snapshot', name);
    await this.mutex.run([volume], async () => {
      const info = this.ctx.store.snapshotInfo(volume, name);
      const key = exportNameOf(volume, name);
      const jobs = this.holds.get(key);
      if (jobs) {
        throw new StoreError(StoreErrorCode.SnapshotBusy,
          `snapshot '${key}' is in use by ${jobs.join(', ')}; cancel it first (snapnbd backup cancel JOB)`);
      }
      const held = this.ctx.leases.where((l) => l.exportName === key);
      if (held.length > 0) {
        throw new StoreError(StoreErrorCode.SnapshotBusy,
          `snapshot '${key}' is exported to ${held.length} NBD connection(s); disconnect them first`);
      }
      this.pendingSnapshots.set(key, { state: SnapshotState.Deleting, volume, name, description: info.description, started: this.now(), info });
      try {
        await this.tracked([volume], () => timed(this.ctx.opts.operations, 'snapshot_delete', () => this.ctx.store.deleteSnapshot(volume, name)));
        this.ctx.catalog.removeSnapshot(volume, name);
      } finally {
        this.pendingSnapshots.delete(key);
      }
      this.ctx.leases.forgetCounters((k) => k === key);
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
      this.ctx.store.snapshotInfo(volume, snapshot); // not found before busy
      const held = this.ctx.leases.where((l) => l.volume === volume && l.snapshot === null);
      if (held.length > 0 && !force) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${volume}' has ${held.length} NBD connection(s) to its head; disconnect them or use force`);
      }
      // Fence in the same tick as the check: no session can slip in between.
      this.fencedVolumes.add(volume);
      try {
        await this.ctx.leases.revokeAndWait(held, `volume '${volume}' is being rolled back to snapshot '${snapshot}'`);
        await this.tracked([volume], () => this.ctx.store.rollback(volume, snapshot));
      } finally {
        this.fencedVolumes.delete(volume);
      }
      return { disconnected: held.length };
    });
  }

  async diff(volume: string, from: string, to: string | null, page: { start?: number; limit?: number }): Promise<DiffPage> {
    checkName('volume', volume);
    checkName('snapshot', from);
    if (to !== null) checkName('snapshot', to);
    return this.ctx.store.diff(volume, from, to, page);
  }

  // ---- internals ----

  /** Runs a store change; if it fails, the catalog reloads the volumes it touched (it may be half done). */
  private async tracked<T>(volumes: string[], op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (e) {
      for (const v of volumes) this.ctx.catalog.invalidate(v);
      throw e;
    }
  }

  private now(): Date {
    return this.ctx.opts.now ? this.ctx.opts.now() : new Date();
  }

  private snapshotExists(volume: string, name: string): boolean {
    try {
      this.ctx.store.snapshotInfo(volume, name);
      return true;
    } catch (e) {
      if (e instanceof StoreError && e.code === StoreErrorCode.SnapshotNotFound) return false;
      throw e;
    }
  }

  private generateName(volume: string): string {
    const base = generatedSnapshotBase(volume, this.now());
    const taken = new Set(this.ctx.store.listSnapshots(volume).map((s) => s.name));
    for (const p of this.pendingSnapshots.values()) if (p.volume === volume) taken.add(p.name);
    return uniqueName(base, taken);
  }
}
