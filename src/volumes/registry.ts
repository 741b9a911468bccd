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
// from export-catalog.ts. Longer than a few hundred lines because every busy rule sits beside the
// operation it guards; splitting the listing/paging half out is the next step (issue 11 note).
import type { BlockDevice } from '../storage/device.ts';
import {
  checkName, isValidName, StoreError, StoreErrorCode,
  type DiffPage, type SnapshotInfo, type Store, type VolumeInfo, type VolumeSpec,
} from '../storage/types.ts';
import type { ExportDescription, ExportLease, ExportResolver, ResolvedExport } from '../server/exports.ts';
import { formatSize } from '../util/size.ts';
import { exportNameOf, generatedSnapshotBase, isValidExportName, parseExportName, uniqueName } from './export-name.ts';
import { ExportCatalog, compareNames, type CatalogSnapshot, type CatalogVolume } from './export-catalog.ts';
import { KeyedMutex } from './keyed-mutex.ts';
import { describeHolders, LeaseTable, REVOKE_WAIT_MS } from './leases.ts';
import { ReadOnlyDevice } from './read-only-device.ts';
import { VolumeState, unavailableExportMessage } from './state.ts';
import { SnapshotState, type ExportStats, type ListPage, type RegistryStats, type SnapshotView, type VolumeDeleted, type VolumeView } from './views.ts';
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

/** A snapshot being created or deleted (listed as such; its export name resolves to nothing). */
interface PendingSnapshot {
  state: SnapshotState;
  volume: string;
  name: string;
  description: string;
  started: Date;
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
  private readonly catalog: ExportCatalog;
  private closing = false;

  constructor(store: Store, opts: RegistryOptions) {
    this.store = store;
    this.opts = opts;
    this.leases = new LeaseTable(opts.revokeWaitMs ?? REVOKE_WAIT_MS);
    this.catalog = new ExportCatalog(store);
  }

  get defaultExport(): string {
    return this.opts.defaultExport;
  }

  get readOnly(): boolean {
    return this.opts.readOnly;
  }

  // ---- ExportResolver (the NBD server's side) ----

  /** From the catalog: no block map is walked, whatever the number of exports. */
  list(): ExportDescription[] {
    const out: ExportDescription[] = [];
    const volumes = [...this.catalog.volumes()];
    for (const v of volumes) out.push({ name: v.name, description: this.describeVolume(v) });
    if (this.opts.listSnapshots === false) return out;
    for (const v of volumes) {
      for (const s of v.snapshots.values()) {
        if (this.pending.get(exportNameOf(v.name, s.name))?.state === SnapshotState.Deleting) continue;
        out.push({ name: exportNameOf(v.name, s.name), description: this.describeSnapshot(s) });
      }
    }
    return out;
  }

  lookup(name: string): ResolvedExport | undefined {
    const real = name === '' ? this.opts.defaultExport : name;
    const parts = parseExportName(real);
    if (!isValidExportName(parts)) return undefined;
    const { volume, snapshot } = parts;
    try {
      const v = this.catalog.volume(volume);
      if (!v) return undefined;
      if (snapshot === null) return { name: real, description: this.describeVolume(v), device: this.headDevice(volume) };
      if (this.pending.has(real)) return undefined; // being created or deleted
      const s = v.snapshots.get(snapshot);
      if (!s) return undefined;
      return { name: real, description: this.describeSnapshot(s), device: this.store.snapshotView(volume, snapshot) };
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

  // ---- volumes ----

  /**
   * Volumes in name order, `limit` of them after the name `after`; `next` is the `after` of the
   * following page (null: none). Space figures are computed for this page only.
   */
  listVolumes(): VolumeView[] {
    return this.volumePage().volumes;
  }

  volumePage(page: ListPage = {}): { volumes: VolumeView[]; next: string | null } {
    const names = this.catalog.volumeNames();
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
    const end = Math.min(names.length, start + (page.limit ?? names.length));
    const volumes = names.slice(start, end).map((n) => this.volumeView(this.store.volumeInfo(n)));
    return { volumes, next: end < names.length ? names[end - 1] ?? null : null };
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

  /**
   * Snapshots oldest first (then those being created), `limit` of them after the snapshot `after`
   * (which must still exist); `next` is the `after` of the following page (null: none).
   */
  listSnapshots(volume: string): SnapshotView[] {
    return this.snapshotPage(volume).snapshots;
  }

  snapshotPage(volume: string, page: ListPage = {}): { snapshots: SnapshotView[]; next: string | null } {
    checkName('volume', volume);
    const volumeSize = this.store.volumeInfo(volume).size; // VOLUME_NOT_FOUND
    const names = [...(this.catalog.volume(volume)?.snapshots.keys() ?? [])];
    const known = new Set(names);
    const creating = new Map<string, PendingSnapshot>();
    for (const p of this.pending.values()) {
      if (p.volume !== volume || p.state !== SnapshotState.Creating || known.has(p.name)) continue;
      creating.set(p.name, p);
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
    const end = Math.min(names.length, start + (page.limit ?? names.length));
    const snapshots = names.slice(start, end).map((n): SnapshotView => {
      const p = creating.get(n);
      if (!p) return this.snapshotView(this.store.snapshotInfo(volume, n));
      return {
        volume, name: p.name, created: p.started.toISOString(), state: SnapshotState.Creating, reason: null,
        description: p.description, size: volumeSize, referenced: 0, used: 0, written: 0,
        exports: [], connections: 0, clones: [], guid: '',
      };
    });
    return { snapshots, next: end < names.length ? names[end - 1] ?? null : null };
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
    const volumes = this.store.listVolumes();
    const exports: ExportStats[] = [];
    const seen = new Set<string>();
    for (const v of volumes) {
      seen.add(v.name);
      exports.push({ name: v.name, volume: v.name, snapshot: null, ...this.leases.countersOf(v.name) });
    }
    for (const [name, c] of this.leases.sortedCounters()) {
      if (seen.has(name)) continue;
      const { volume, snapshot } = parseExportName(name);
      exports.push({ name, volume, snapshot, ...c });
    }
    return {
      exports,
      volumes: volumes.map((v) => ({ name: v.name, size: v.size, ...v.space, snapshots: v.snapshots, ...stateOf(v) })),
      store: this.store.stats(),
    };
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
    return {
      name: v.name, size: v.size, chunkSize: v.chunkSize, backing: v.backing, origin: v.origin,
      created: v.created,
      ...stateOf(v),
      snapshots: v.snapshots,
      referenced: v.space.referenced, used: v.space.used, written: v.space.written,
      readOnly: this.opts.readOnly,
      connections: this.connections(v.name),
    };
  }

  private snapshotView(s: SnapshotInfo, state?: SnapshotState): SnapshotView {
    const key = exportNameOf(s.volume, s.name);
    const connections = this.connections(key);
    const backup = this.annotate?.(s.volume, s.name) ?? null;
    return {
      volume: s.volume, name: s.name, created: s.created,
      state: state ?? this.pending.get(key)?.state
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

  private describeVolume(v: CatalogVolume): string {
    const parts = [formatSize(v.size)];
    if (v.backing !== null) parts.push(`backing ${v.backing}`);
    if (v.origin !== null) parts.push(`clone of ${exportNameOf(v.origin.volume, v.origin.snapshot)}`);
    const n = v.snapshots.size;
    parts.push(`${n} snapshot${n === 1 ? '' : 's'}`);
    if (this.opts.readOnly) parts.push('read-only');
    if (v.unavailable !== null) parts.push(`UNAVAILABLE: ${v.unavailable}`);
    return `volume ${v.name}: ${parts.join(', ')}`;
  }

  private describeSnapshot(s: CatalogSnapshot): string {
    const text = `${formatSize(s.size)} snapshot of ${s.volume} taken ${s.created}, read-only`
      + (s.unavailable !== null ? `, UNAVAILABLE: ${s.unavailable}` : '');
    return s.description === '' ? text : `${text}: ${s.description}`;
  }
}

function stateOf(v: VolumeInfo): { state: VolumeState; reason: string | null } {
  return { state: v.unavailable === null ? VolumeState.Ready : VolumeState.Unavailable, reason: v.unavailable };
}
