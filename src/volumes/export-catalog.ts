// The names and fixed facts (size, backing, origin, creation time, description) of every volume
// and snapshot, kept beside the store so that NBD_OPT_LIST and INFO/GO cost no per-export work
// that scales with the data or the snapshots: the store's VolumeInfo/SnapshotInfo carry space
// figures (counters, storage/space.ts: cheap, but not free per export; they used to walk each
// block map, and thousands of exports made a LIST take seconds).
//
// The registry is the only writer of the store once it runs, and tells the catalog about every
// change; a change whose outcome is unsure (a failed operation) marks the volume stale, and the
// next read reloads that volume from the store (one volume's walks, not the whole store's).
import type { SnapshotInfo, Store, VolumeInfo } from '../storage/types.ts';

export type CatalogSnapshot = Pick<SnapshotInfo, 'volume' | 'name' | 'created' | 'description' | 'size' | 'unavailable'>;

export interface CatalogVolume extends Pick<VolumeInfo, 'name' | 'size' | 'backing' | 'origin' | 'created' | 'unavailable'> {
  /** Oldest first, as the store lists them. */
  snapshots: Map<string, CatalogSnapshot>;
}

export class ExportCatalog {
  private readonly store: Store;
  /** In the store's order (creation); null until first read. */
  private entries: Map<string, CatalogVolume> | null = null;
  private readonly stale = new Set<string>();
  private sortedNames: string[] | null = null;

  constructor(store: Store) {
    this.store = store;
  }

  /** Every volume, in creation order. */
  volumes(): Iterable<CatalogVolume> {
    return this.load().values();
  }

  volume(name: string): CatalogVolume | undefined {
    return this.load().get(name);
  }

  snapshot(volume: string, name: string): CatalogSnapshot | undefined {
    return this.volume(volume)?.snapshots.get(name);
  }

  /** Volume names in code-point order (the control socket pages by name). */
  volumeNames(): readonly string[] {
    this.sortedNames ??= [...this.load().keys()].sort(compareNames);
    return this.sortedNames;
  }

  addVolume(info: VolumeInfo): void {
    if (!this.entries) return; // loaded later, with it
    this.entries.set(info.name, entryOf(info, []));
    this.sortedNames = null;
  }

  removeVolume(name: string): void {
    this.entries?.delete(name);
    this.stale.delete(name);
    this.sortedNames = null;
  }

  addSnapshot(info: SnapshotInfo): void {
    this.entries?.get(info.volume)?.snapshots.set(info.name, snapshotOf(info));
  }

  removeSnapshot(volume: string, name: string): void {
    this.entries?.get(volume)?.snapshots.delete(name);
  }

  /** The volume's entry may be wrong (an operation on it failed part-way): reload it on next read. */
  invalidate(volume: string): void {
    this.stale.add(volume);
  }

  private load(): Map<string, CatalogVolume> {
    if (!this.entries) {
      this.entries = new Map();
      for (const v of this.store.listVolumes()) this.entries.set(v.name, entryOf(v, this.store.listSnapshots(v.name)));
      this.stale.clear();
      this.sortedNames = null;
    }
    if (this.stale.size > 0) this.reloadStale(this.entries);
    return this.entries;
  }

  private reloadStale(entries: Map<string, CatalogVolume>): void {
    for (const name of this.stale) {
      let info: VolumeInfo | null = null;
      try {
        info = this.store.volumeInfo(name);
      } catch {
        // gone: dropped below
      }
      if (info) entries.set(name, entryOf(info, this.store.listSnapshots(name)));
      else entries.delete(name);
    }
    this.stale.clear();
    this.sortedNames = null;
  }
}

export function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function entryOf(v: VolumeInfo, snaps: SnapshotInfo[]): CatalogVolume {
  return {
    name: v.name, size: v.size, backing: v.backing, origin: v.origin, created: v.created, unavailable: v.unavailable,
    snapshots: new Map(snaps.map((s) => [s.name, snapshotOf(s)])),
  };
}

function snapshotOf(s: SnapshotInfo): CatalogSnapshot {
  return { volume: s.volume, name: s.name, created: s.created, description: s.description, size: s.size, unavailable: s.unavailable };
}
