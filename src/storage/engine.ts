// The copy-on-write store (`Store`, types.ts): wires the modules below together and runs the
// control operations (volumes, snapshots, clones, rollback) one at a time. README.md has the
// module map, the on-disk format, and the order of a write and of a commit through the modules.
//   recovery.ts   open: superblock choice, replay, reclaim  -> catalog, chunk store, journal
//   journal.ts    transaction manager: pending records, commit, checkpoint, superblock flip
//   catalog.ts    volumes, nodes, epoch, ids                 (records.ts: their persisted form)
//   data-path.ts  read / write / zero / extents             (devices.ts: the BlockDevices)
//   compactor.ts  the data compactor                         (compact-plan.ts: its decisions)
import { NodeMap } from './block-map.ts';
import { Catalog, nodeRecord, type Node, type Volume } from './catalog.ts';
import { snapshotInfo, spaceOf, storeStats, storeStatsSliced, volumeInfo } from './accounting.ts';
import { checkBacking, closeBackings, fingerprintBacking, openBackings } from './backing.ts';
import { ChunkClass, DataStore, METADATA_RESERVE_MIN_BYTES } from './chunk-store.ts';
import { Compactor, type CompactStats } from './compactor.ts';
import { DataPath } from './data-path.ts';
import type { BlockDevice } from './device.ts';
import { HeadDevice, SnapshotDevice } from './devices.ts';
import { DIFF_LIMIT_DEFAULT, diffMaps } from './diff.ts';
import type { FileIo, IoFile } from './file-io.ts';
import type { FillSource } from './fill.ts';
import { Rec } from './format.ts';
import { GUID_PATTERN, newGuid } from './guid.ts';
import { Journal } from './journal.ts';
import { encodeDelete, encodeNode, encodeRollback, encodeVolume, type BackingRecord } from './records.ts';
import { checkChunkCount, checkShrink, resizeHeld } from './resize.ts';
import { openStoreFiles, type LogFn, type OpenOptions } from './recovery.ts';
import { SegmentReclaimer } from './segment-reclaim.ts';
import {
  CHUNK_SIZE_DEFAULT, checkChunkSize, checkName, checkVolumeSize, SECTOR, StoreClosedError, StoreError, StoreErrorCode,
  type DiffPage, type SnapshotInfo, type Space, type Store, type StoreStats, type VolumeInfo, type VolumeSpec,
} from './types.ts';
import { holdAll } from './write-gate.ts';
import type { Slicer } from '../util/slice.ts';

export type { LogFn } from './recovery.ts';
export type { CompactStats } from './compactor.ts';
export { COMMIT_INTERVAL_DEFAULT_MS, JOURNAL_COMPACT_BYTES_DEFAULT } from './journal.ts';
export { COMPACT_SPACE_MARGIN_BYTES } from './compactor.ts';
export { SEGMENT_BYTES_DEFAULT } from './chunk-store.ts';

export interface StoreObserver {
  commit(seconds: number): void;
  compactionPass(bytesMoved: number): void;
}

export interface EngineOptions extends OpenOptions {
  commitIntervalMs: number;
  /** Told of each commit and compaction pass (the metrics endpoint). */
  observer?: StoreObserver;
}

export { VOLUME_CHUNKS_MAX } from './resize.ts';

/**
 * Read-only access to the engine's state for the offline checker and white-box tests: the
 * catalog's volumes and nodes, the chunk classes with their slot counts, and where the journal
 * stands. Nothing here may be changed by the caller.
 */
export interface StoreInspection {
  readonly volumes: readonly Volume[];
  volume(name: string): Volume | undefined;
  readonly nodes: readonly Node[];
  readonly classes: readonly ChunkClass[];
  /** The class of a chunk size (created empty if the store has none). */
  chunkClass(chunkSize: number): ChunkClass;
  readonly journalGen: number;
  readonly checkpointLen: number;
  /** Bytes of the journal that hold committed transactions. */
  readonly journalEnd: number;
  /** Bytes of uncommitted journal tail found at open. */
  readonly tornTail: number;
}

export class CowStore implements Store {
  readonly dataDir: string;
  private readonly io: FileIo;
  private readonly opts: EngineOptions;
  private readonly catalog: Catalog;
  private readonly chunks: DataStore;
  private readonly journal: Journal;
  private readonly dataPath: DataPath;
  private readonly reclaimer: SegmentReclaimer;
  private readonly compactor: Compactor;
  private readonly tornTail: number;
  private closed = false;
  /** Control operations, one at a time (they are rare; the data path never waits on this). */
  private opChain: Promise<unknown> = Promise.resolve();

  private constructor(dataDir: string, opts: EngineOptions, opened: { catalog: Catalog; chunks: DataStore; journal: Journal; tornTail: number }) {
    this.dataDir = dataDir;
    this.opts = opts;
    this.io = opts.fileIo;
    this.catalog = opened.catalog;
    this.chunks = opened.chunks;
    this.journal = opened.journal;
    this.tornTail = opened.tornTail;
    this.dataPath = new DataPath(this.io, this.chunks, this.catalog, this.journal);
    this.reclaimer = new SegmentReclaimer(this.io, dataDir, this.chunks, (msg) => opts.log('warn', msg));
    this.chunks.onEmptySegment = (cls, seg) => this.reclaimer.deleteSegment(cls, seg);
    this.chunks.onShrunkSegment = (cls, seg) => this.reclaimer.trimSegment(cls, seg);
    this.chunks.reclaimPending = () => this.reclaimer.pending();
    this.compactor = new Compactor({
      io: this.io, dataDir, chunks: this.chunks, catalog: this.catalog, journal: this.journal, reclaimer: this.reclaimer,
      serial: (fn) => this.serial(fn), log: opts.log,
      ...(opts.observer ? { onPass: (bytes: number) => opts.observer!.compactionPass(bytes) } : {}),
    });
    // Room for the journal to reach its checkpoint threshold, and for that checkpoint's new file.
    this.chunks.metadataReserve = () => METADATA_RESERVE_MIN_BYTES + this.journal.checkpointLen +
      Math.max(0, Math.max(opts.journalCompactBytes, this.journal.checkpointLen * 2) - this.journal.journalEnd);
    if (opts.observer) this.journal.onCommitted = (s) => opts.observer!.commit(s);
    if (opts.inspectOnly) this.compactor.stop();
    this.journal.onFreed = () => this.compactor.schedule();
    this.catalog.startCounting();
  }

  static async open(dataDir: string, opts: EngineOptions): Promise<CowStore> {
    const t0 = process.hrtime.bigint();
    const opened = await openStoreFiles(dataDir, opts);
    const store = new CowStore(dataDir, opts, opened);
    if (!opts.inspectOnly) store.journal.startPeriodicCommit(opts.commitIntervalMs, (msg) => opts.log('error', msg));
    if (opened.created) {
      opts.log('info', `created store in ${dataDir}`);
      return store;
    }
    if (!opts.inspectOnly) store.compactor.schedule(); // a crash may have left sparse segments
    await openBackings(store.io, store.catalog.volumes(), (msg) => opts.log('error', msg));
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    opts.log('info', `opened store ${dataDir}: ${store.catalog.volumeCount} volumes, journal ${store.journal.journalEnd} bytes, recovered in ${ms.toFixed(1)} ms`);
    return store;
  }

  // ------------------------------------------------------------------ engine extras (tests, tools)

  /** Background compaction after commits that free slots (seeded model tests turn it off). */
  get autoCompact(): boolean {
    return this.compactor.autoCompact;
  }

  set autoCompact(on: boolean) {
    this.compactor.autoCompact = on;
  }

  /** Delay from a freeing commit to the background compactor's look (tests may shorten it). */
  get compactDelayMs(): number {
    return this.compactor.delayMs;
  }

  set compactDelayMs(ms: number) {
    this.compactor.delayMs = ms;
  }

  /** Runs compaction passes until none qualifies (compactor.ts). */
  async compact(): Promise<CompactStats> {
    this.checkOpen();
    return this.compactor.compact();
  }

  /** Makes every write resolved before the call durable. */
  commit(): Promise<void> {
    return this.journal.commit();
  }

  /** Writes a checkpoint at the next commit. */
  checkpoint(): Promise<void> {
    return this.journal.checkpoint();
  }

  /** Waits for background segment deletions and truncations. */
  settle(): Promise<void> {
    return this.reclaimer.settle();
  }

  inspect(): StoreInspection {
    const { catalog, chunks, journal } = this;
    return {
      volumes: [...catalog.volumes()], volume: (name) => catalog.findVolume(name), nodes: catalog.allNodes(),
      classes: [...chunks.classes.values()], chunkClass: (cs) => chunks.classOf(cs),
      journalGen: journal.journalGen, checkpointLen: journal.checkpointLen, journalEnd: journal.journalEnd, tornTail: this.tornTail,
    };
  }

  /** Space accounting of one node (accounting.ts). */
  spaceOf(node: Node): Space {
    return spaceOf(node);
  }

  // ------------------------------------------------------------------ Store API

  private checkOpen(): void {
    if (this.closed) throw new StoreClosedError();
  }

  /** Control operations run one at a time (they are rare; the data path never waits on this). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.opChain.then(() => {
      this.checkOpen();
      return fn();
    });
    this.opChain = p.catch(() => undefined);
    return p;
  }

  listVolumes(): VolumeInfo[] {
    return [...this.catalog.volumes()].sort((a, b) => a.id - b.id).map(volumeInfo);
  }

  volumeInfo(name: string): VolumeInfo {
    return volumeInfo(this.catalog.volume(name));
  }

  async createVolume(spec: VolumeSpec): Promise<VolumeInfo> {
    this.checkOpen();
    checkName('volume', spec.name);
    const chunkSize = spec.chunkSize ?? CHUNK_SIZE_DEFAULT;
    checkChunkSize(chunkSize);
    return this.serial(async () => {
      const catalog = this.catalog;
      if (catalog.findVolume(spec.name)) throw new StoreError(StoreErrorCode.NameTaken, `volume '${spec.name}' exists`);
      let backing: BackingRecord | null = null;
      let backingFile: IoFile | null = null;
      if (spec.backing !== undefined) ({ record: backing, file: backingFile } = await fingerprintBacking(this.io, spec.backing));
      const size = spec.size ?? (backing ? Math.ceil(backing.size / SECTOR) * SECTOR : undefined);
      try {
        checkVolumeSize(size);
        checkChunkCount(size, chunkSize);
      } catch (e) {
        await backingFile?.close();
        throw e;
      }
      const vol = catalog.addVolume({ id: catalog.newId(), name: spec.name, size, chunkSize, createdMs: Date.now(), backing, origin: null });
      vol.backingFile = backingFile;
      const head = catalog.addNode({ id: catalog.newId(), kind: 'head', name: '', description: '', createdMs: vol.createdMs, epoch: 0, guid: '', size },
        vol, new NodeMap(vol.nChunks, vol.chunkClass));
      this.journal.log(encodeVolume(vol));
      this.journal.log(encodeNode(Rec.Node, nodeRecord(head), 0));
      await this.journal.commitChange(`create volume '${spec.name}'`);
      return volumeInfo(vol);
    });
  }

  async deleteVolume(name: string): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      const vol = this.catalog.volume(name);
      const release = await holdAll([vol.gate]);
      try {
        this.catalog.dropVolume(vol);
        this.journal.log(encodeDelete(Rec.VolumeDelete, vol.id));
        const bf = vol.backingFile;
        vol.backingFile = null;
        if (bf && ![...this.catalog.volumes()].some((v) => v.backingFile === bf)) await bf.close().catch(() => undefined);
        await this.journal.commitChange(`delete volume '${name}'`);
      } finally {
        release();
      }
    });
  }

  /**
   * Records the volume's backing file as it is now (a new fingerprint, made durable by a
   * checkpoint) and serves the volume again. Dangerous: the volume's chunks were written over
   * the old content. `accepted` is what had changed (null: nothing had).
   */
  async acceptBacking(name: string): Promise<{ info: VolumeInfo; accepted: string | null }> {
    this.checkOpen();
    return this.serial(async () => {
      const vol = this.catalog.volume(name);
      if (!vol.backing) throw new StoreError(StoreErrorCode.InvalidArgument, `volume '${name}' has no backing file`);
      const path = vol.backing.path;
      const check = await checkBacking(this.io, vol.backing);
      await check.f?.close();
      if (!(await this.io.stat(path))) throw new StoreError(StoreErrorCode.BackingChanged, `backing file ${path} is missing: there is nothing to accept; put it back`);
      const { record, file } = await fingerprintBacking(this.io, path);
      const release = await holdAll([vol.gate]);
      try {
        const old = vol.backingFile;
        vol.backing = record;
        vol.backingFile = file;
        vol.backingError = null;
        if (old && ![...this.catalog.volumes()].some((v) => v.backingFile === old)) await old.close().catch(() => undefined);
        await this.journal.checkpoint(); // a Volume record's fingerprint changes only by a checkpoint
      } finally {
        release();
      }
      return { info: volumeInfo(vol), accepted: check.err?.message ?? null };
    });
  }

  head(volume: string): BlockDevice {
    const v = this.catalog.volume(volume);
    if (v.backingError) throw v.backingError;
    v.device ??= new HeadDevice(this.dataPath, v);
    return v.device;
  }

  attachFill(volume: string, source: FillSource | null): BlockDevice {
    const v = this.catalog.volume(volume);
    v.fill = source;
    return new HeadDevice(this.dataPath, v, true);
  }

  snapshotView(volume: string, snapshot: string, opts: { background?: boolean } = {}): BlockDevice {
    const v = this.catalog.volume(volume);
    if (v.backingError) throw v.backingError;
    const s = this.catalog.snapshot(volume, snapshot);
    // A bulk copy's view is its own (a few fields); the clients' one is shared.
    if (opts.background) return new SnapshotDevice(this.dataPath, s, true);
    s.view ??= new SnapshotDevice(this.dataPath, s);
    return s.view;
  }

  async createSnapshot(volume: string, name: string, description = '', guid?: string): Promise<SnapshotInfo> {
    this.checkOpen();
    checkName('snapshot', name);
    if (guid !== undefined && !GUID_PATTERN.test(guid)) throw new StoreError(StoreErrorCode.InvalidArgument, `snapshot identity '${guid}' is not 32 lowercase hex digits`);
    return this.serial(async () => {
      const catalog = this.catalog;
      const vol = catalog.volume(volume);
      if (vol.snaps.some((s) => s.name === name)) throw new StoreError(StoreErrorCode.NameTaken, `snapshot '${volume}@${name}' exists`);
      // Its unfilled chunks are holes in the map: a snapshot now would keep them as zeros.
      if (vol.fill !== null) throw new StoreError(StoreErrorCode.VolumeBusy, `volume '${volume}' is still being restored: snapshot it once the restore is done`);
      // No write is held: the in-place writes in flight finish, new ones redirect until the map
      // is shared (write-gate.ts `redirect`); later ones see a shared map and redirect anyway, so
      // none can touch the snapshot's chunks, and they proceed while the commit makes it durable
      // (their records follow its Node record in the same or a later transaction). Holding every
      // write until those in flight drained (and, before, over the commit's fdatasync) stalled
      // them for hundreds of milliseconds under load.
      const release = await vol.gate.redirect();
      let node: Node;
      try {
        node = catalog.addNode({ id: catalog.newId(), kind: 'snap', name, description, createdMs: Date.now(), epoch: catalog.epoch, guid: guid ?? newGuid(), size: vol.size },
          vol, vol.head.map.share());
        catalog.shared(vol.head, node);
        this.journal.trackDurable(node);
        this.journal.log(encodeNode(Rec.Node, nodeRecord(node), vol.head.id));
      } finally {
        release();
      }
      await this.journal.commitChange(`create snapshot '${volume}@${name}'`);
      return snapshotInfo(catalog, node);
    });
  }

  listSnapshots(volume: string, only?: ReadonlySet<string>): SnapshotInfo[] {
    const vol = this.catalog.volume(volume);
    if (only === undefined) return vol.snaps.map((s, i) => snapshotInfo(this.catalog, s, i));
    const at = this.catalog.snapshotPositions(vol);
    const found: number[] = [];
    for (const name of only) {
      const i = at.get(name);
      if (i !== undefined) found.push(i);
    }
    return found.sort((a, b) => a - b).map((i) => snapshotInfo(this.catalog, vol.snaps[i] as Node, i));
  }

  snapshotInfo(volume: string, name: string): SnapshotInfo {
    return snapshotInfo(this.catalog, this.catalog.snapshot(volume, name));
  }

  async deleteSnapshot(volume: string, name: string): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      const vol = this.catalog.volume(volume);
      const node = this.catalog.snapshot(volume, name);
      // Until the delete is durable no write may go in place into a slot the (still committed)
      // snapshot holds: writes redirect over the commit instead of waiting for it.
      const release = await vol.gate.redirect();
      try {
        this.catalog.dropNode(node);
        this.journal.untrack(node);
        // Queued before any of its slots is freed: a commit that carries a free carries the delete.
        this.journal.log(encodeDelete(Rec.NodeDelete, node.id));
        await this.catalog.finishReleases(); // its pages, in slices (node-release.ts)
        await this.journal.commitChange(`delete snapshot '${volume}@${name}'`);
      } finally {
        release();
      }
    });
  }

  async rollback(volume: string, snapshot: string): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      const vol = this.catalog.volume(volume);
      const node = this.catalog.snapshot(volume, snapshot);
      const release = await holdAll([vol.gate]);
      try {
        // A snapshot from before a grow: the head keeps its size, the part past the snapshot reads
        // zeros. The zeroed last chunk is written first and mapped with the Rollback record, in
        // one synchronous step: one commit takes the whole rollback.
        const tail = node.size < vol.size ? await this.dataPath.prepareTail(node) : null;
        this.catalog.assignMap(vol.head, node);
        this.journal.log(encodeRollback(vol.head.id, node.id));
        if (node.size < vol.size) {
          this.dataPath.zeroOverBacking(vol, node.size, vol.size);
          if (tail) this.dataPath.mapTail(vol, tail);
        }
        await this.journal.commitChange(`roll back '${volume}' to '${snapshot}'`);
      } finally {
        release();
      }
    });
  }

  async clone(volume: string, snapshot: string, newName: string): Promise<VolumeInfo> {
    this.checkOpen();
    checkName('volume', newName);
    return this.serial(async () => {
      const catalog = this.catalog;
      const src = catalog.volume(volume);
      const node = catalog.snapshot(volume, snapshot);
      if (catalog.findVolume(newName)) throw new StoreError(StoreErrorCode.NameTaken, `volume '${newName}' exists`);
      const vol = catalog.addVolume({
        id: catalog.newId(), name: newName, size: node.size, chunkSize: src.chunkSize, createdMs: Date.now(),
        backing: src.backing ? { ...src.backing } : null, origin: { volume, snapshot },
      });
      vol.backingFile = src.backingFile;
      vol.backingError = src.backingError;
      const head = catalog.addNode({ id: catalog.newId(), kind: 'head', name: '', description: '', createdMs: vol.createdMs, epoch: 0, guid: '', size: vol.size },
        vol, node.map.share());
      catalog.shared(node, head);
      this.journal.log(encodeVolume(vol));
      this.journal.log(encodeNode(Rec.Node, nodeRecord(head), node.id));
      await this.journal.commitChange(`clone '${volume}@${snapshot}' as '${newName}'`);
      return volumeInfo(vol);
    });
  }

  /**
   * Grows the volume, or with `shrink` cuts it: see Store.resizeVolume. The Resize record and
   * the grown part's ZERO entries go in one transaction, so a crash leaves the old size or the
   * new one whole.
   */
  async resizeVolume(name: string, size: number, opts: { shrink?: boolean } = {}): Promise<VolumeInfo> {
    this.checkOpen();
    checkVolumeSize(size);
    return this.serial(async () => {
      const vol = this.catalog.volume(name);
      if (vol.backingError) throw vol.backingError; // unavailable: not served, not resized
      checkChunkCount(size, vol.chunkSize);
      if (size === vol.size) return volumeInfo(vol);
      if (size < vol.size) checkShrink(this.catalog, vol, size, opts.shrink === true);
      const release = await holdAll([vol.gate]);
      try {
        await resizeHeld({ catalog: this.catalog, dataPath: this.dataPath, journal: this.journal }, vol, size);
      } finally {
        release();
      }
      await this.journal.commitChange(`resize volume '${name}' to ${size} bytes`);
      return volumeInfo(vol);
    });
  }

  async diff(volume: string, from: string, to: string | null, page: { start?: number; limit?: number } = {}): Promise<DiffPage> {
    this.checkOpen();
    const vol = this.catalog.volume(volume);
    const a = this.catalog.snapshot(volume, from).map;
    const bNode = to === null ? vol.head : this.catalog.snapshot(volume, to);
    // Over `to`'s extent: past `from`'s end (a grow in between) a map reads as unmapped.
    return diffMaps(a, bNode.map, vol.chunkSize, bNode.size, page.start ?? 0, page.limit ?? DIFF_LIMIT_DEFAULT);
  }

  async flush(): Promise<void> {
    await this.journal.commit();
  }

  stats(): StoreStats {
    return storeStats(this.io, this.dataDir, this.journal.journalGen, this.chunks, this.catalog);
  }

  /** `stats()` in slices that yield the event loop (server.stats; accounting.ts). */
  statsSliced(slicer?: Slicer): Promise<StoreStats> {
    return storeStatsSliced(this.io, this.dataDir, this.journal.journalGen, this.chunks, this.catalog, slicer);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.journal.stopPeriodicCommit();
    this.compactor.stop();
    await this.opChain;
    if (!this.opts.inspectOnly) await this.journal.commit();
    await this.reclaimer.settle();
    this.closed = true;
    this.dataPath.shutDown();
    const journalClosed = this.journal.close();
    await this.chunks.closeAll();
    await journalClosed;
    await closeBackings(this.catalog.volumes());
  }

  /** Abandons the store without committing (tests: a simulated crash already killed its I/O). */
  abandon(): void {
    this.compactor.stop();
    this.closed = true;
    this.dataPath.shutDown();
    // Release descriptors without committing anything (what a kill would leave on disk).
    void this.chunks.closeAll();
    void this.journal.close();
    for (const v of this.catalog.volumes()) void v.backingFile?.close().catch(() => undefined);
  }
}

