// The volume registry: joins the NBD server and the storage engine. It resolves export names
// (VOLUME = the writable head, VOLUME@SNAPSHOT = a read-only snapshot view, '' = the default
// export) to block devices, tracks who holds each export (leases), and wraps the engine's
// snapshot operations with the busy rules the control socket promises:
//   - rollback refuses a volume whose head is exported (VOLUME_BUSY) unless forced; forced, it
//     revokes those leases (the sessions finish in-flight requests and close) and waits for them;
//   - deleting an exported snapshot is refused (SNAPSHOT_BUSY);
//   - deleting an exported volume is refused (VOLUME_BUSY) unless forced.
// Changes to one volume are serialised (KeyedMutex); different volumes proceed in parallel.
import type { BlockDevice } from '../storage/device.ts';
import {
  NAME_PATTERN, StoreError, StoreErrorCode,
  type DiffPage, type SnapshotInfo, type Store, type StoreStats, type VolumeInfo, type VolumeSpec,
} from '../storage/types.ts';
import type { ExportCounters, ExportDescription, ExportLease, ExportResolver, ResolvedExport } from '../server/exports.ts';
import { formatSize } from '../util/size.ts';
import { ExportCatalog, compareNames, type CatalogSnapshot, type CatalogVolume } from './export-catalog.ts';
import { KeyedMutex } from './keyed-mutex.ts';
import { ReadOnlyDevice } from './read-only-device.ts';

/** How long a forced rollback or delete waits for revoked sessions to close before giving up. */
export const REVOKE_WAIT_MS = 30_000;
/** Separates volume and snapshot in an export name; reserved in names. */
export const SNAPSHOT_SEPARATOR = '@';
export const NAME_MAX = 128;

export const SnapshotState = { Creating: 'creating', Ready: 'ready', Deleting: 'deleting' } as const;
export type SnapshotState = (typeof SnapshotState)[keyof typeof SnapshotState];

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
}

/** A snapshot as the control socket lists it. */
export interface SnapshotView {
  volume: string;
  name: string;
  created: string;
  state: SnapshotState;
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
}

/** A volume as the control socket lists it. */
export interface VolumeView {
  name: string;
  size: number;
  chunkSize: number;
  backing: string | null;
  origin: { volume: string; snapshot: string } | null;
  created: string;
  snapshots: number;
  referenced: number;
  used: number;
  written: number;
  readOnly: boolean;
  /** NBD connections to the head now. */
  connections: number;
}

/** One page of a list: up to `limit` entries after the entry named `after`. */
export interface ListPage {
  after?: string | undefined;
  limit?: number | undefined;
}

export interface ExportStats extends ExportCounters {
  name: string;
  volume: string;
  snapshot: string | null;
}

export interface RegistryStats {
  exports: ExportStats[];
  volumes: { name: string; size: number; referenced: number; used: number; written: number; snapshots: number }[];
  store: StoreStats;
}

interface LeaseRecord {
  readonly exportName: string;
  readonly volume: string;
  readonly snapshot: string | null;
  readonly onRevoke: (reason: string) => void;
  revoked: boolean;
}

interface PendingSnapshot {
  state: SnapshotState;
  volume: string;
  name: string;
  description: string;
  started: Date;
}

export function exportNameOf(volume: string, snapshot: string | null): string {
  return snapshot === null ? volume : `${volume}${SNAPSHOT_SEPARATOR}${snapshot}`;
}

/** Splits `VOLUME@SNAPSHOT`; a name without '@' is a head. */
export function parseExportName(name: string): { volume: string; snapshot: string | null } {
  const at = name.indexOf(SNAPSHOT_SEPARATOR);
  if (at < 0) return { volume: name, snapshot: null };
  return { volume: name.slice(0, at), snapshot: name.slice(at + 1) };
}

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

export function checkName(kind: 'volume' | 'snapshot', name: string): void {
  if (!isValidName(name)) {
    throw new StoreError(StoreErrorCode.InvalidName,
      `invalid ${kind} name '${name}': 1-${NAME_MAX} characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'`);
  }
}

/** `VOLUME-YYYYMMDDTHHMMSSZ`, the volume part shortened so that a `-NNN` suffix still fits. */
export function generatedSnapshotBase(volume: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z'); // 20261122T101500Z
  const room = NAME_MAX - stamp.length - 1 - 8;
  return `${volume.slice(0, room)}-${stamp}`;
}

export class VolumeRegistry implements ExportResolver {
  private readonly store: Store;
  private readonly opts: RegistryOptions;
  private readonly mutex = new KeyedMutex();
  private readonly leases = new Set<LeaseRecord>();
  private readonly counters = new Map<string, ExportCounters>();
  /** Keyed by export name `VOLUME@SNAPSHOT`. */
  private readonly pending = new Map<string, PendingSnapshot>();
  /** Volumes whose head may not be acquired now (forced rollback or delete in progress). */
  private readonly fenced = new Set<string>();
  private readonly readOnlyWrappers = new WeakMap<BlockDevice, ReadOnlyDevice>();
  private readonly releaseWaiters = new Set<() => void>();
  private readonly catalog: ExportCatalog;
  private closing = false;

  constructor(store: Store, opts: RegistryOptions) {
    this.store = store;
    this.opts = opts;
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
    const { volume, snapshot } = parseExportName(real);
    if (!isValidName(volume) || (snapshot !== null && !isValidName(snapshot))) return undefined;
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

  acquire(name: string, onRevoke: (reason: string) => void): ExportLease | undefined {
    if (this.closing) return undefined;
    const resolved = this.lookup(name);
    if (!resolved) return undefined;
    const { volume, snapshot } = parseExportName(resolved.name);
    if (snapshot === null && this.fenced.has(volume)) return undefined;
    const record: LeaseRecord = { exportName: resolved.name, volume, snapshot, onRevoke, revoked: false };
    this.leases.add(record);
    const counters = this.countersOf(resolved.name);
    counters.connections++;
    let released = false;
    return {
      ...resolved,
      counters,
      release: () => {
        if (released) return;
        released = true;
        counters.connections--;
        this.leases.delete(record);
        for (const wake of [...this.releaseWaiters]) wake();
      },
    };
  }

  /** Revokes every lease (server stopping) and waits until they are released or the wait ends. */
  async revokeAll(reason: string): Promise<void> {
    this.closing = true;
    const held = [...this.leases];
    for (const l of held) this.revoke(l, reason);
    await this.waitReleased(held).catch(() => undefined);
  }

  /** NBD connections holding `exportName` now. */
  connections(exportName: string): number {
    let n = 0;
    for (const l of this.leases) if (l.exportName === exportName) n++;
    return n;
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

  /** Deletes a volume and its snapshots; clones survive. Refused while exported unless `force`. */
  async deleteVolume(name: string, force: boolean): Promise<{ disconnected: number }> {
    checkName('volume', name);
    return this.mutex.run([name], async () => {
      this.store.volumeInfo(name); // VOLUME_NOT_FOUND before anything else
      const held = this.leasesWhere((l) => l.volume === name);
      if (held.length > 0 && !force) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${name}' has ${held.length} NBD connection(s) (${describeHolders(held)}); disconnect them or use force`);
      }
      this.fenced.add(name);
      try {
        await this.revokeAndWait(held, `volume '${name}' is being deleted`);
        await this.tracked([name], () => this.store.deleteVolume(name));
        this.catalog.removeVolume(name);
      } finally {
        this.fenced.delete(name);
      }
      for (const key of [...this.counters.keys()]) if (parseExportName(key).volume === name) this.counters.delete(key);
      return { disconnected: held.length };
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
        const info = await this.tracked([volume], () => this.store.createSnapshot(volume, snapName, description));
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
        volume, name: p.name, created: p.started.toISOString(), state: SnapshotState.Creating,
        description: p.description, size: volumeSize, referenced: 0, used: 0, written: 0,
        exports: [], connections: 0, clones: [],
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
      const held = this.leasesWhere((l) => l.exportName === key);
      if (held.length > 0) {
        throw new StoreError(StoreErrorCode.SnapshotBusy,
          `snapshot '${key}' is exported to ${held.length} NBD connection(s); disconnect them first`);
      }
      this.pending.set(key, { state: SnapshotState.Deleting, volume, name, description: info.description, started: this.now() });
      try {
        await this.tracked([volume], () => this.store.deleteSnapshot(volume, name));
        this.catalog.removeSnapshot(volume, name);
      } finally {
        this.pending.delete(key);
      }
      this.counters.delete(key);
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
      const held = this.leasesWhere((l) => l.volume === volume && l.snapshot === null);
      if (held.length > 0 && !force) {
        throw new StoreError(StoreErrorCode.VolumeBusy,
          `volume '${volume}' has ${held.length} NBD connection(s) to its head; disconnect them or use force`);
      }
      // Fence in the same tick as the check: no session can slip in between.
      this.fenced.add(volume);
      try {
        await this.revokeAndWait(held, `volume '${volume}' is being rolled back to snapshot '${snapshot}'`);
        await this.tracked([volume], () => this.store.rollback(volume, snapshot));
      } finally {
        this.fenced.delete(volume);
      }
      return { disconnected: held.length };
    });
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
      exports.push({ name: v.name, volume: v.name, snapshot: null, ...this.countersOf(v.name) });
    }
    for (const [name, c] of [...this.counters].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (seen.has(name)) continue;
      const { volume, snapshot } = parseExportName(name);
      exports.push({ name, volume, snapshot, ...c });
    }
    return {
      exports,
      volumes: volumes.map((v) => ({ name: v.name, size: v.size, ...v.space, snapshots: v.snapshots })),
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

  private countersOf(exportName: string): ExportCounters {
    let c = this.counters.get(exportName);
    if (!c) {
      c = { connections: 0, requests: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };
      this.counters.set(exportName, c);
    }
    return c;
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
    if (!taken.has(base)) return base;
    for (let i = 2; ; i++) {
      const candidate = `${base}-${i}`;
      if (!taken.has(candidate)) return candidate;
    }
  }

  private leasesWhere(pred: (l: LeaseRecord) => boolean): LeaseRecord[] {
    return [...this.leases].filter(pred);
  }

  private revoke(l: LeaseRecord, reason: string): void {
    if (l.revoked) return;
    l.revoked = true;
    try {
      l.onRevoke(reason);
    } catch {
      // A session that fails to stop is still waited for; its error is its own to log.
    }
  }

  private async revokeAndWait(held: LeaseRecord[], reason: string): Promise<void> {
    if (held.length === 0) return;
    for (const l of held) this.revoke(l, reason);
    await this.waitReleased(held);
  }

  /** Resolves when none of `held` is still leased; VOLUME_BUSY after the revoke wait. */
  private waitReleased(held: LeaseRecord[]): Promise<void> {
    const pending = (): boolean => held.some((l) => this.leases.has(l));
    if (!pending()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.releaseWaiters.delete(wake);
        reject(new StoreError(StoreErrorCode.VolumeBusy,
          `NBD connection(s) did not close within ${this.opts.revokeWaitMs ?? REVOKE_WAIT_MS} ms after being asked to`));
      }, this.opts.revokeWaitMs ?? REVOKE_WAIT_MS);
      const wake = (): void => {
        if (pending()) return;
        clearTimeout(timer);
        this.releaseWaiters.delete(wake);
        resolve();
      };
      this.releaseWaiters.add(wake);
    });
  }

  private volumeView(v: VolumeInfo): VolumeView {
    return {
      name: v.name, size: v.size, chunkSize: v.chunkSize, backing: v.backing, origin: v.origin,
      created: v.created, snapshots: v.snapshots,
      referenced: v.space.referenced, used: v.space.used, written: v.space.written,
      readOnly: this.opts.readOnly,
      connections: this.connections(v.name),
    };
  }

  private snapshotView(s: SnapshotInfo, state?: SnapshotState): SnapshotView {
    const key = exportNameOf(s.volume, s.name);
    const connections = this.connections(key);
    return {
      volume: s.volume, name: s.name, created: s.created,
      state: state ?? this.pending.get(key)?.state ?? (s.durable ? SnapshotState.Ready : SnapshotState.Creating),
      description: s.description, size: s.size,
      referenced: s.space.referenced, used: s.space.used, written: s.space.written,
      exports: connections > 0 ? [key] : [],
      connections,
      clones: s.clones,
    };
  }

  private describeVolume(v: CatalogVolume): string {
    const parts = [formatSize(v.size)];
    if (v.backing !== null) parts.push(`backing ${v.backing}`);
    if (v.origin !== null) parts.push(`clone of ${exportNameOf(v.origin.volume, v.origin.snapshot)}`);
    const n = v.snapshots.size;
    parts.push(`${n} snapshot${n === 1 ? '' : 's'}`);
    if (this.opts.readOnly) parts.push('read-only');
    return `volume ${v.name}: ${parts.join(', ')}`;
  }

  private describeSnapshot(s: CatalogSnapshot): string {
    const text = `${formatSize(s.size)} snapshot of ${s.volume} taken ${s.created}, read-only`;
    return s.description === '' ? text : `${text}: ${s.description}`;
  }
}

function describeHolders(held: LeaseRecord[]): string {
  const names = [...new Set(held.map((l) => l.exportName))];
  return names.join(', ');
}
