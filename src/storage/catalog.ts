// The catalog: every volume with its head and snapshots, by name and by id, plus the store's
// epoch and id counter. It owns this state; control operations (engine.ts) and replay
// (catalog-records.ts) change it only through the methods here. A Volume or Node is its
// persisted record (records.ts) plus what exists only in memory: the map, the chunk class, the
// write gate and range lock of the data path, the backing file handle, the devices.
import { NodeMap, PAGE_SHIFT } from './block-map.ts';
import { NodeRelease } from './node-release.ts';
import type { ChunkClass, DataStore } from './chunk-store.ts';
import type { BlockDevice } from './device.ts';
import type { IoFile } from './file-io.ts';
import type { FillSource } from './fill.ts';
import { RangeLock } from './range-lock.ts';
import { gainIfAlone, NodeSpace, rebuild, released, setEntry, type SpaceNode } from './space.ts';
import type { NodeKind, NodeRecord, VolumeRecord } from './records.ts';
import { StoreError, StoreErrorCode } from './types.ts';
import { WriteGate } from './write-gate.ts';

export interface Volume extends VolumeRecord {
  /** Chunks of the head (`size` rounded up); both change only through Catalog.setVolumeSize. */
  nChunks: number;
  /** The chunk class of its chunk size (shared with its clones). */
  readonly chunkClass: ChunkClass;
  head: Node;
  /** Oldest first. */
  readonly snaps: Node[];
  deleted: boolean;
  /** Runtime only: the snapshot barrier and the chunk locks of the data path (data-path.ts). */
  readonly gate: WriteGate;
  readonly locks: RangeLock;
  /** Runtime only: the opened backing file, or why it cannot be used (backing.ts). */
  backingFile: IoFile | null;
  backingError: StoreError | null;
  /** The head's device, made on first use (devices.ts). */
  device: BlockDevice | null;
  /** Runtime only: where unfilled ranges of the head come from while they arrive (fill.ts). */
  fill: FillSource | null;
}

export interface Node extends Omit<NodeRecord, 'volumeId'> {
  readonly vol: Volume;
  readonly kind: NodeKind;
  readonly map: NodeMap;
  /** A snapshot's read-only device, made on first use (devices.ts). */
  view: BlockDevice | null;
  deleted: boolean;
  /** False from a snapshot's creation until a commit holding its Node record succeeded. */
  durable: boolean;
  /** Space counters (space.ts), kept as entries are born and freed. */
  readonly space: NodeSpace;
}

export function nodeRecord(n: Node): NodeRecord {
  return {
    id: n.id, volumeId: n.vol.id, kind: n.kind, name: n.name, description: n.description, createdMs: n.createdMs, epoch: n.epoch, guid: n.guid,
    size: n.size,
  };
}

export class Catalog {
  private readonly byName = new Map<string, Volume>();
  private readonly byId = new Map<number, Volume>();
  private readonly nodes = new Map<number, Node>();
  private readonly chunks: DataStore;
  private epochNow = 1;
  private nextIdNow = 1;
  /** Off during replay (counters are rebuilt once after it, `startCounting`). */
  private counting = false;
  /** Walks of dropped nodes' maps not finished yet (node-release.ts), oldest first. */
  private readonly releasing: NodeRelease[] = [];
  /** Each volume's snapshot positions by name, made on first use after its list changed. */
  private readonly positions = new WeakMap<Volume, Map<string, number>>();

  constructor(chunks: DataStore) {
    this.chunks = chunks;
  }

  /** The current epoch: entries written now are born in it; a snapshot freezes it and bumps it. */
  get epoch(): number {
    return this.epochNow;
  }

  get nextId(): number {
    return this.nextIdNow;
  }

  /** A checkpoint's State record. */
  setCounters(epoch: number, nextId: number): void {
    this.epochNow = epoch;
    this.nextIdNow = nextId;
  }

  newId(): number {
    return this.nextIdNow++;
  }

  addVolume(rec: VolumeRecord): Volume {
    const vol: Volume = {
      ...rec, nChunks: Math.ceil(rec.size / rec.chunkSize), chunkClass: this.chunks.classOf(rec.chunkSize),
      head: null as unknown as Node, snaps: [], deleted: false,
      gate: new WriteGate(), locks: new RangeLock(), backingFile: null, backingError: null, device: null, fill: null,
    };
    this.byName.set(vol.name, vol);
    this.byId.set(vol.id, vol);
    if (vol.id >= this.nextIdNow) this.nextIdNow = vol.id + 1;
    return vol;
  }

  addNode(rec: Omit<NodeRecord, 'volumeId'>, vol: Volume, map: NodeMap): Node {
    const node: Node = { ...rec, vol, map, view: null, deleted: false, durable: true, space: new NodeSpace() };
    this.nodes.set(node.id, node);
    if (node.kind === 'head') vol.head = node;
    else {
      vol.snaps.push(node);
      this.positions.delete(vol);
      if (node.epoch + 1 > this.epochNow) this.epochNow = node.epoch + 1;
    }
    if (node.id >= this.nextIdNow) this.nextIdNow = node.id + 1;
    return node;
  }

  /**
   * Removes a node; its map's pages are let go by the returned walk, which the caller runs
   * (`run`: sliced, after queuing the delete record; `runSync`) before its next control step.
   */
  dropNode(node: Node): NodeRelease {
    node.deleted = true;
    this.nodes.delete(node.id);
    const i = node.vol.snaps.indexOf(node);
    if (i >= 0) node.vol.snaps.splice(i, 1);
    this.positions.delete(node.vol);
    const walk = new NodeRelease(node.map, this.counting ? { cls: node.vol.chunkClass, nodes: this.candidates(node.vol) } : null);
    if (!walk.finished) this.releasing.push(walk);
    return walk;
  }

  /** Whether a dropped node's pages are still being let go (its walk runs in slices). */
  get releasesPending(): boolean {
    return this.releasing.length > 0;
  }

  /** Runs the walks of dropped nodes to the end, sliced (node-release.ts). */
  async finishReleases(): Promise<void> {
    while (this.releasing.length > 0) {
      await this.releasing[0]!.run();
      this.releasing.shift();
    }
  }

  /** ... or in one go. */
  finishReleasesSync(): void {
    for (const w of this.releasing) w.runSync();
    this.releasing.length = 0;
  }

  /** An entry at page index `pi` is about to change: every walk does that index first. */
  private beforeChange(pi: number): void {
    for (const w of this.releasing) w.page(pi);
  }

  dropVolume(vol: Volume): void {
    for (const s of [...vol.snaps]) {
      this.dropNode(s);
      this.finishReleasesSync();
    }
    this.dropNode(vol.head);
    this.finishReleasesSync();
    vol.deleted = true;
    this.byName.delete(vol.name);
    this.byId.delete(vol.id);
  }

  /**
   * The head becomes the snapshot's content (a rollback). It keeps its own size: a snapshot
   * taken before a grow is shorter, and the chunks past its end read as never written.
   */
  assignMap(head: Node, from: Node): void {
    const old = head.map.l1;
    head.map.assign(from.map);
    // A snapshot from before a grow is shorter: the map grows back (no entry is dropped).
    head.map.resize(head.vol.nChunks);
    if (!this.counting) return;
    released(old, head.vol.chunkClass, this.candidates(head.vol));
    head.space.copyShared(from.space);
  }

  /**
   * A resize: the volume's and its head's size and the head's map (engine.ts checks the size;
   * a cut drops the head's chunks past the end, outside setEntry: the counters are derived again).
   */
  setVolumeSize(vol: Volume, size: number): void {
    const shrink = size < vol.size;
    vol.size = size;
    vol.nChunks = Math.ceil(size / vol.chunkSize);
    vol.head.size = size;
    vol.head.map.resize(vol.nChunks);
    if (shrink) this.recount();
  }

  // ------------------------------------------------------------------ space counters (space.ts)

  /** `to` was made to share `from`'s map (a snapshot of a head, a clone of a snapshot). */
  shared(from: Node, to: Node): void {
    if (this.counting) to.space.copyShared(from.space);
  }

  /** Sets a head's map entry (the data path), keeping the space counters. */
  setEntry(node: Node, c: number, slot: number, birth: number): void {
    if (this.releasing.length > 0) this.beforeChange(c >>> PAGE_SHIFT);
    if (this.counting) {
      const snaps = node.vol.snaps;
      setEntry(node, node.vol.chunkClass, this.candidates(node.vol), c, slot, birth, snaps[snaps.length - 1]);
    }
    else node.map.set(c, slot, birth);
  }

  /** After replay: derives the counters from the maps once, then keeps them. */
  startCounting(): void {
    rebuild(this.nodes.values());
    this.counting = true;
  }

  /**
   * Derives the counters again from the maps (O(distinct pages), synchronous): for a change that
   * drops entries without `setEntry` (a map cut shorter), rare enough not to need its own rule.
   */
  recount(): void {
    if (this.counting) rebuild(this.nodes.values());
  }

  /**
   * A reference on `slot` (mapped at chunk `c` of `vol`'s class) that no map page held was dropped
   * (a hold outside the maps, e.g. on a base chunk): if one page of one node now holds it alone,
   * that node gains it.
   */
  heldOutsideMapsReleased(vol: Volume, c: number, slot: number): void {
    if (this.releasing.length > 0) this.beforeChange(c >>> PAGE_SHIFT);
    if (this.counting && vol.chunkClass.holders(slot) === 1) gainIfAlone(this.candidates(vol), c, slot);
  }

  /** Nodes that may hold a slot of `vol`'s chunk class: its own snapshots newest first, its head, then the other volumes of the class. */
  private candidates(vol: Volume): () => Iterable<SpaceNode> {
    const volumes = this.byName;
    return function* () {
      for (let i = vol.snaps.length - 1; i >= 0; i--) yield vol.snaps[i] as Node;
      if (!vol.head.deleted) yield vol.head;
      for (const v of volumes.values()) {
        if (v === vol || v.chunkClass !== vol.chunkClass) continue;
        for (let i = v.snaps.length - 1; i >= 0; i--) yield v.snaps[i] as Node;
        yield v.head;
      }
    };
  }

  // ------------------------------------------------------------------ lookups

  findVolume(name: string): Volume | undefined {
    return this.byName.get(name);
  }

  /** For the Store API: a missing name is the caller's error. */
  volume(name: string): Volume {
    const v = this.byName.get(name);
    if (!v) throw new StoreError(StoreErrorCode.VolumeNotFound, `volume '${name}' not found`);
    return v;
  }

  /**
   * Where each snapshot of `vol` stands in its list (oldest first), by name: a sliced listing
   * looks up one slice of names at a time without a walk of the whole list for each.
   */
  snapshotPositions(vol: Volume): ReadonlyMap<string, number> {
    let at = this.positions.get(vol);
    if (!at) {
      at = new Map(vol.snaps.map((s, i) => [s.name, i]));
      this.positions.set(vol, at);
    }
    return at;
  }

  snapshot(volume: string, name: string): Node {
    const s = this.volume(volume).snaps.find((n) => n.name === name);
    if (!s) throw new StoreError(StoreErrorCode.SnapshotNotFound, `snapshot '${volume}@${name}' not found`);
    return s;
  }

  /** For replay: an unknown id is a corrupt journal. */
  volumeById(id: number): Volume {
    const v = this.byId.get(id);
    if (!v) throw new Error(`unknown volume id ${id}`);
    return v;
  }

  node(id: number): Node {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`unknown node id ${id}`);
    return n;
  }

  volumes(): IterableIterator<Volume> {
    return this.byName.values();
  }

  get volumeCount(): number {
    return this.byName.size;
  }

  /** Every node of every volume, by ascending id. */
  allNodes(): Node[] {
    return [...this.nodes.values()].sort((a, b) => a.id - b.id);
  }

  /** Volumes cloned from a snapshot. */
  clonesOf(s: Node): string[] {
    const out: string[] = [];
    for (const v of this.byName.values()) if (v.origin && v.origin.volume === s.vol.name && v.origin.snapshot === s.name) out.push(v.name);
    return out;
  }
}
