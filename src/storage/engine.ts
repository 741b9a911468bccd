// The copy-on-write store: volumes, their heads, snapshots and clones as nodes with shared
// two-level maps (block-map.ts), chunks in segment files (chunk-store.ts), metadata in a
// checksummed journal with two alternating superblocks (format.ts). See README.md for the
// on-disk format, the write path, the commit protocol and recovery.
import { crc32 } from 'node:zlib';
import { isSlot, L1, NodeMap, Page, UNMAPPED, ZERO, ZERO_ALLOCATED, ENTRIES_PER_PAGE, PAGE_SHIFT } from './block-map.ts';
import { ChunkClass, DataStore, METADATA_RESERVE_MIN_BYTES, SEGMENT_BYTES_DEFAULT, SEGMENT_FILE_RE, segmentFile, type Segment } from './chunk-store.ts';
import { StorageError, UncommittedChangeError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions } from './device.ts';
import { CrashPoint, type FileIo, type IoFile } from './file-io.ts';
import {
  commitRecord, decodeJournalHeader, decodeSuperblock, encodeJournalHeader, encodeSuperblock, FORMAT_VERSION,
  JOURNAL_HEADER_LEN, journalFile, Rec, RecordWriter, scanRecords, SUPERBLOCK_FILE, SUPERBLOCK_SLOT,
  type RecordReader, type Superblock,
} from './format.ts';
import {
  CHUNK_SIZE_DEFAULT, CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, NAME_PATTERN, StoreError, StoreErrorCode,
  type ChangedExtent, type DiffPage, type SnapshotInfo, type Space, type Store, type StoreStats, type VolumeInfo,
  type VolumeSpec,
} from './types.ts';

export type LogFn = (level: 'error' | 'warn' | 'info' | 'debug', msg: string) => void;

export interface EngineOptions {
  fileIo: FileIo;
  commitIntervalMs: number;
  log: LogFn;
  /** Segment file size for a new store (existing stores keep theirs). */
  segmentBytes: number;
  /** Journal length beyond which a commit writes a new checkpoint instead of appending. */
  journalCompactBytes: number;
  /** Open for offline checking: no writes at all (no tail truncation, no reclaim, no timer). */
  inspectOnly: boolean;
}

/**
 * Background commit for clients that never FLUSH (NBD promises nothing for unflushed writes):
 * bounds the work a crash can lose and the memory of pending records. 5 s like ext4's commit=5
 * and ZFS's txg timeout; at 1 s the data fdatasyncs halved write throughput (bench/README.md).
 */
export const COMMIT_INTERVAL_DEFAULT_MS = 5000;
export const JOURNAL_COMPACT_BYTES_DEFAULT = 32 * 1024 * 1024;
/** Largest map: 2^32 chunks (16 TiB at 4 KiB chunks, 256 TiB at 64 KiB). */
export const VOLUME_CHUNKS_MAX = 2 ** 32;
/** Extents per extents() answer; the NBD client asks again for the rest. */
export const EXTENTS_MAX = 4096;
export const DIFF_LIMIT_DEFAULT = 1 << 20;
/** Samples (of BACKING_SAMPLE_LEN bytes) checksummed to notice a changed backing file. */
export const BACKING_SAMPLES = 16;
export const BACKING_SAMPLE_LEN = 4096;
/**
 * Data compaction (README "Compactor"): a segment is emptied when at most this share of its slots
 * is in use (copying out its live chunks costs at most half a segment)...
 */
export const COMPACT_LIVE_RATIO_MAX = 0.5;
/**
 * ...and when at least this share of its slots are free holes below its last used slot (the
 * bytes the pass gives back: a short, dense tail segment is not worth copying).
 */
export const COMPACT_WASTE_RATIO_MIN = 0.25;
/** After a commit freed slots the background compactor looks this much later (frees come in bursts). */
export const COMPACT_DELAY_MS = 1000;
/** Back-to-back background passes take at most this share of the time (a pass of t ms waits 3t). */
export const COMPACT_DUTY_MAX = 0.25;
/** Live chunks are copied this many bytes at a time: bounded memory, client I/O interleaves. */
export const COMPACT_BATCH_BYTES = 4 * 1024 * 1024;
/**
 * Live bytes one pass copies at most (one default segment): a pass is one control operation
 * (snapshot create waits for it) and writes one checkpoint, so it empties several segments.
 */
export const COMPACT_PASS_BYTES = 64 * 1024 * 1024;
/**
 * A pass must give back at least the bytes of the checkpoint it writes (a 1 TiB volume's maps
 * make a checkpoint of ~128 MiB), except that a checkpoint up to this size costs little more
 * than any commit's syncs.
 */
export const COMPACT_CHEAP_CHECKPOINT_BYTES = 1024 * 1024;
/** Free space a pass leaves on top of its copies and its checkpoint (other writers go on). */
export const COMPACT_SPACE_MARGIN_BYTES = 64 * 1024 * 1024;
const ZERO_BUF_LEN = 1024 * 1024;
const ZEROES = Buffer.alloc(ZERO_BUF_LEN);

interface BackingRec {
  path: string;
  size: number;
  mtimeMs: number;
  sample: number;
}

export interface VolumeRec {
  id: number;
  name: string;
  size: number;
  chunkSize: number;
  nChunks: number;
  backing: BackingRec | null;
  origin: { volume: string; snapshot: string } | null;
  createdMs: number;
  head: NodeRec;
  snaps: NodeRec[];
  cls: ChunkClass;
  deleted: boolean;
  // runtime
  device: HeadDevice | null;
  backingFile: IoFile | null;
  backingError: StoreError | null;
  inflight: number;
  barrier: Promise<void> | null;
  drained: (() => void) | null;
  locks: Map<number, Promise<void>>;
}

export interface NodeRec {
  id: number;
  vol: VolumeRec;
  kind: 'head' | 'snap';
  name: string;
  description: string;
  createdMs: number;
  /** Snapshots: the epoch they froze (entries born later are not in them). */
  epoch: number;
  map: NodeMap;
  view: SnapshotDevice | null;
  deleted: boolean;
  /** False from a snapshot's creation until a commit holding its Node record succeeded. */
  durable: boolean;
}

const NODE_HEAD = 0;
const NODE_SNAP = 1;

/** What compaction did (compact() sums its passes). */
export interface CompactStats {
  /** Segments emptied (each file goes once no read still holds its old slots). */
  segments: number;
  /** Chunks copied to lower segments and remapped. */
  chunksMoved: number;
  bytesMoved: number;
  /** Longest hold of a class's writes (draining in-flight writes before a segment is marked). */
  maxHoldMs: number;
}

function corrupt(file: string, why: string, cause?: unknown): StoreError {
  return new StoreError(StoreErrorCode.StoreCorrupt, `${file}: ${why}`, cause === undefined ? undefined : { cause });
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

/** A cheap fingerprint of a backing file: crc32 over evenly spread samples (and its size). */
export async function sampleChecksum(f: IoFile, size: number): Promise<number> {
  const buf = Buffer.alloc(BACKING_SAMPLE_LEN);
  let crc = crc32(String(size));
  for (let i = 0; i < BACKING_SAMPLES; i++) {
    const pos = size <= BACKING_SAMPLE_LEN ? 0 : Math.floor(((size - BACKING_SAMPLE_LEN) * i) / (BACKING_SAMPLES - 1) / 512) * 512;
    const n = await f.read(buf, 0, BACKING_SAMPLE_LEN, pos);
    crc = crc32(buf.subarray(0, n), crc);
    if (size <= BACKING_SAMPLE_LEN) break;
  }
  return crc;
}

export class CowStore implements Store {
  readonly dataDir: string;
  readonly io: FileIo;
  readonly data: DataStore;
  private readonly opts: EngineOptions;
  readonly volumes = new Map<string, VolumeRec>();
  readonly volumesById = new Map<number, VolumeRec>();
  readonly nodes = new Map<number, NodeRec>();
  epoch = 1;
  nextId = 1;

  // Journal state.
  private journal: IoFile | null = null;
  private sbFile: IoFile | null = null;
  journalGen = 0;
  journalEnd = 0;
  checkpointLen = 0;
  private sbSeq = 0;
  commitSeq = 0;
  private pending: Buffer[] = [];
  private commitRunning: Promise<void> | null = null;
  private commitQueued: Promise<void> | null = null;
  private forceCheckpoint = false;
  /** The journal generation the last checkpoint attempt used (failed attempts included). */
  private triedJournalGen = 0;
  /** Snapshots created since the last commit swap (durable once a commit after it succeeds). */
  private undurable = new Set<NodeRec>();

  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private opChain: Promise<unknown> = Promise.resolve();
  private segDeletes: Promise<void> = Promise.resolve();
  /** Background compaction after commits that free slots (seeded model tests turn it off). */
  autoCompact = true;
  /** Delay from a freeing commit to the background compactor's look (tests may shorten it). */
  compactDelayMs = COMPACT_DELAY_MS;
  private compactTimer: NodeJS.Timeout | null = null;
  private compactDue = 0;
  private lastPassMs = 0;
  private compactNotBefore = 0;
  private closing = false;
  /** Set when the journal tail was torn at open (check reports it). */
  tornTail = 0;

  constructor(dataDir: string, opts: EngineOptions, segmentBytes: number) {
    this.dataDir = dataDir;
    this.opts = opts;
    this.io = opts.fileIo;
    this.data = new DataStore(this.io, dataDir, segmentBytes);
    this.data.onEmptySegment = (cls, seg) => this.deleteSegment(cls, seg);
    this.data.onShrunkSegment = (cls, seg) => this.trimSegment(cls, seg);
    // Room for the journal to reach its checkpoint threshold, and for that checkpoint's new file.
    this.data.metadataReserve = () => METADATA_RESERVE_MIN_BYTES + this.checkpointLen +
      Math.max(0, Math.max(this.opts.journalCompactBytes, this.checkpointLen * 2) - this.journalEnd);
  }

  // ------------------------------------------------------------------ open / create

  static async open(dataDir: string, opts: EngineOptions): Promise<CowStore> {
    const io = opts.fileIo;
    const sbPath = `${dataDir}/${SUPERBLOCK_FILE}`;
    if (!opts.inspectOnly) await io.mkdirp(dataDir);
    const st = await io.stat(sbPath);
    if (!st) {
      const names = await io.readdir(dataDir);
      const ours = names.filter((n) => /^journal-\d+\.log$/.test(n) || SEGMENT_FILE_RE.test(n));
      if (ours.length > 0) throw corrupt(sbPath, `superblock file missing but store files exist (${ours.slice(0, 3).join(', ')})`);
      if (opts.inspectOnly) throw corrupt(sbPath, 'no store here (superblock file missing)');
      const store = new CowStore(dataDir, opts, opts.segmentBytes);
      store.sbFile = await io.open(sbPath, 'create');
      await store.writeCheckpoint(store.serializeCheckpoint());
      await io.syncDir(dataDir);
      store.startTimer();
      opts.log('info', `created store in ${dataDir}`);
      return store;
    }
    const sbBuf = Buffer.alloc(SUPERBLOCK_SLOT * 2);
    const sbf = await io.open(sbPath, opts.inspectOnly ? 'r' : 'rw');
    const n = await sbf.read(sbBuf, 0, sbBuf.length, 0);
    let best: Superblock | null = null;
    const whys: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = decodeSuperblock(sbBuf.subarray(i * SUPERBLOCK_SLOT, Math.min(n, (i + 1) * SUPERBLOCK_SLOT)));
      if (r.ok) {
        if (!best || r.sb.seq > best.seq) best = r.sb;
      } else {
        if (r.why === 'newer') throw corrupt(sbPath, `format version ${r.version} is newer than this snapnbd supports (${FORMAT_VERSION})`);
        whys.push(r.why);
      }
    }
    // One good copy is enough (the other may be a torn write); none good: say why.
    if (!best && whys.every((w) => w === 'foreign' || w === 'empty') && whys.includes('foreign')) throw corrupt(sbPath, 'not a snapnbd store (bad magic)');
    if (!best) throw corrupt(sbPath, `no valid superblock (${whys.map((w, i) => `copy ${i}: ${w}`).join('; ')})`);
    const store = new CowStore(dataDir, opts, best.segmentBytes);
    store.sbFile = sbf;
    store.sbSeq = best.seq;
    store.journalGen = best.journalGen;
    store.checkpointLen = best.checkpointLen;
    const t0 = process.hrtime.bigint();
    await store.recover();
    if (!opts.inspectOnly) {
      await store.reclaimFiles();
      store.startTimer();
      store.scheduleCompaction(store.compactDelayMs); // a crash may have left sparse segments
    }
    await store.openBackings();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    opts.log('info', `opened store ${dataDir}: ${store.volumes.size} volumes, journal ${store.journalEnd} bytes, recovered in ${ms.toFixed(1)} ms`);
    return store;
  }

  private async recover(): Promise<void> {
    const jPath = `${this.dataDir}/${journalFile(this.journalGen)}`;
    const st = await this.io.stat(jPath);
    if (!st) throw corrupt(jPath, 'journal file named by the superblock is missing');
    const jf = await this.io.open(jPath, this.opts.inspectOnly ? 'r' : 'rw');
    const buf = Buffer.alloc(st.size);
    const got = await jf.read(buf, 0, st.size, 0);
    const b = buf.subarray(0, got);
    const h = decodeJournalHeader(b);
    if (typeof h === 'string') throw corrupt(jPath, h);
    if (h.gen !== this.journalGen) throw corrupt(jPath, `journal generation ${h.gen}, superblock expects ${this.journalGen}`);
    if (b.length < this.checkpointLen) throw corrupt(jPath, `truncated: ${b.length} bytes, checkpoint needs ${this.checkpointLen}`);
    // The checkpoint must be whole: it was synced before the superblock named it.
    let txn: RecordReader[] = [];
    let end = JOURNAL_HEADER_LEN;
    let cpDone = false;
    const cp = { pages: new Map<number, Page>(), l1s: new Map<number, L1>() };
    try {
      for (const r of scanRecords(b.subarray(0, this.checkpointLen), JOURNAL_HEADER_LEN)) {
        if (r.rec.type === Rec.Commit) {
          const seq = r.rec.u64();
          for (const rec of txn) this.apply(rec, cp);
          txn = [];
          this.commitSeq = seq;
          end = r.end;
          cpDone = true;
          break;
        }
        txn.push(r.rec);
      }
    } catch (e) {
      throw corrupt(jPath, `bad checkpoint record: ${(e as Error).message}`, e);
    }
    if (!cpDone || end !== this.checkpointLen) throw corrupt(jPath, 'checkpoint damaged (checksum or length mismatch)');
    txn = [];
    try {
      for (const r of scanRecords(b, end)) {
        if (r.rec.type === Rec.Commit) {
          const seq = r.rec.u64();
          if (seq !== this.commitSeq + 1) break; // a stale commit from an earlier, truncated tail
          for (const rec of txn) this.apply(rec, null);
          txn = [];
          this.commitSeq = seq;
          end = r.end;
          continue;
        }
        txn.push(r.rec);
      }
    } catch (e) {
      throw corrupt(jPath, `bad log record: ${(e as Error).message}`, e);
    }
    this.journalEnd = end;
    this.tornTail = b.length - end;
    if (this.tornTail > 0 && !this.opts.inspectOnly) {
      this.opts.log('warn', `${jPath}: ignoring ${this.tornTail} bytes of uncommitted journal tail`);
      await jf.truncate(end);
      await jf.datasync();
    }
    this.journal = jf;
    for (const c of this.data.classes.values()) c.deriveState();
  }

  /** Deletes what no committed state references: stale journals, empty segment files. */
  private async reclaimFiles(): Promise<void> {
    for (const name of await this.io.readdir(this.dataDir)) {
      const jm = /^journal-(\d+)\.log$/.exec(name);
      if (jm && Number(jm[1]) !== this.journalGen) {
        this.opts.log('info', `removing stale journal ${name}`);
        await this.io.unlink(`${this.dataDir}/${name}`);
        continue;
      }
      const sm = SEGMENT_FILE_RE.exec(name);
      if (!sm) continue;
      const cls = this.data.classes.get(Number(sm[1]));
      const seg = Number(sm[2]);
      if (!cls || (cls.segUse[seg] ?? 0) === 0) {
        this.opts.log('info', `reclaiming unreferenced segment ${name}`);
        await this.io.unlink(`${this.dataDir}/${name}`);
        continue;
      }
      const end = cls.usedEnd(seg);
      const st = await this.io.stat(`${this.dataDir}/${name}`);
      if (st && st.size > end) {
        this.opts.log('info', `reclaiming ${st.size - end} unreferenced bytes at the end of ${name}`);
        const f = await this.io.open(`${this.dataDir}/${name}`, 'rw');
        await f.truncate(end);
        await f.close();
      }
    }
  }

  private async openBackings(): Promise<void> {
    const checked = new Map<string, { f: IoFile | null; err: StoreError | null }>();
    for (const v of this.volumes.values()) {
      if (!v.backing) continue;
      const key = `${v.backing.path}\0${v.backing.size}\0${v.backing.mtimeMs}\0${v.backing.sample}`;
      let r = checked.get(key);
      if (!r) {
        r = await this.openBacking(v.backing);
        checked.set(key, r);
      }
      v.backingFile = r.f;
      v.backingError = r.err;
      if (r.err) this.opts.log('error', r.err.message);
    }
  }

  private async openBacking(b: BackingRec): Promise<{ f: IoFile | null; err: StoreError | null }> {
    const st = await this.io.stat(b.path);
    if (!st) return { f: null, err: new StoreError(StoreErrorCode.BackingChanged, `backing file ${b.path} is missing`) };
    const f = await this.io.open(b.path, 'r');
    const why: string[] = [];
    if (st.size !== b.size) why.push(`size ${st.size} != ${b.size}`);
    if (st.mtimeMs !== b.mtimeMs) why.push(`mtime ${isoTime(st.mtimeMs)} != ${isoTime(b.mtimeMs)}`);
    if (why.length === 0 && (await sampleChecksum(f, st.size)) !== b.sample) why.push('sampled checksum differs');
    if (why.length === 0) return { f, err: null };
    await f.close();
    return { f: null, err: new StoreError(StoreErrorCode.BackingChanged, `backing file ${b.path} changed since its volume was created (${why.join(', ')})`) };
  }

  private startTimer(): void {
    if (this.opts.commitIntervalMs <= 0) return;
    this.timer = setInterval(() => {
      // Only metadata needs the background commit. Data overwritten in place references no new
      // metadata, so like any page-cache server we sync it when a client FLUSHes (or FUA), not
      // on a timer: the timer's fdatasyncs were the write-throughput limit (bench/README.md).
      if (!this.hasPendingMetadata()) return;
      this.commit().catch((e: unknown) => this.opts.log('error', `periodic commit failed: ${(e as Error).message}`));
    }, this.opts.commitIntervalMs);
    this.timer.unref();
  }

  // ------------------------------------------------------------------ replay

  /** Applies one committed record to the in-memory state (recovery and runtime share this). */
  private apply(r: RecordReader, cp: { pages: Map<number, Page>; l1s: Map<number, L1> } | null): void {
    switch (r.type) {
      case Rec.State: {
        this.epoch = r.u32();
        this.nextId = r.u32();
        return;
      }
      case Rec.Volume: {
        const id = r.u32();
        const name = r.str();
        const size = r.u64();
        const chunkSize = r.u32();
        const createdMs = r.f64();
        let backing: BackingRec | null = null;
        if (r.u8()) backing = { path: r.str(), size: r.u64(), mtimeMs: r.f64(), sample: r.u32() };
        let origin: VolumeRec['origin'] = null;
        if (r.u8()) origin = { volume: r.str(), snapshot: r.str() };
        this.addVolume(id, name, size, chunkSize, createdMs, backing, origin);
        return;
      }
      case Rec.VolumeDelete:
        this.dropVolume(this.volById(r.u32()));
        return;
      case Rec.Node:
      case Rec.NodeCp: {
        const id = r.u32();
        const vol = this.volById(r.u32());
        const kind = r.u8() === NODE_HEAD ? 'head' : 'snap';
        const name = r.str();
        const description = r.str();
        const createdMs = r.f64();
        const epoch = r.u32();
        const src = r.u32();
        let map: NodeMap;
        if (r.type === Rec.NodeCp) {
          const l1 = cp?.l1s.get(src);
          if (!l1) throw new Error(`node ${id} names unknown L1 ${src}`);
          l1.refs++;
          map = new NodeMap(vol.nChunks, vol.cls, l1);
        } else if (src === 0) map = new NodeMap(vol.nChunks, vol.cls);
        else map = this.node(src).map.share();
        this.addNode(id, vol, kind, name, description, createdMs, epoch, map);
        return;
      }
      case Rec.NodeDelete:
        this.dropNode(this.node(r.u32()));
        return;
      case Rec.MapRun: {
        const node = this.node(r.u32());
        const first = r.u64();
        const n = r.u32();
        const e = r.u32s(n * 2);
        for (let i = 0; i < n; i++) node.map.set(first + i, e[i * 2] as number, e[i * 2 + 1] as number);
        return;
      }
      case Rec.Rollback: {
        const head = this.node(r.u32());
        head.map.assign(this.node(r.u32()).map);
        return;
      }
      case Rec.Epoch:
        this.epoch = r.u32();
        return;
      case Rec.Page: {
        if (!cp) throw new Error('PAGE record outside a checkpoint');
        const id = r.u32();
        const cs = r.u32();
        const p = new Page();
        p.refs = 0;
        p.e.set(r.u32s(ENTRIES_PER_PAGE * 2));
        const cls = this.data.cls(cs);
        for (let i = 0; i < ENTRIES_PER_PAGE; i++) {
          const s = p.e[i * 2] as number;
          if (s !== UNMAPPED) p.mapped++;
          if (isSlot(s)) cls.ref(s);
        }
        cp.pages.set(id, p);
        return;
      }
      case Rec.L1: {
        if (!cp) throw new Error('L1 record outside a checkpoint');
        const id = r.u32();
        const len = r.u32();
        const count = r.u32();
        const l1 = new L1(len);
        l1.refs = 0;
        for (let i = 0; i < count; i++) {
          const idx = r.u32();
          const p = cp.pages.get(r.u32());
          if (!p || idx >= len) throw new Error(`L1 ${id} entry ${idx} is bad`);
          p.refs++;
          l1.pages[idx] = p;
        }
        cp.l1s.set(id, l1);
        return;
      }
      default:
        throw new Error(`unknown record type ${r.type}`);
    }
  }

  private volById(id: number): VolumeRec {
    const v = this.volumesById.get(id);
    if (!v) throw new Error(`unknown volume id ${id}`);
    return v;
  }

  private node(id: number): NodeRec {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`unknown node id ${id}`);
    return n;
  }

  private addVolume(id: number, name: string, size: number, chunkSize: number, createdMs: number,
    backing: BackingRec | null, origin: VolumeRec['origin']): VolumeRec {
    const cls = this.data.cls(chunkSize);
    const nChunks = Math.ceil(size / chunkSize);
    const vol: VolumeRec = {
      id, name, size, chunkSize, nChunks, backing, origin, createdMs, cls,
      head: null as unknown as NodeRec, snaps: [], deleted: false,
      device: null, backingFile: null, backingError: null, inflight: 0, barrier: null, drained: null, locks: new Map(),
    };
    this.volumes.set(name, vol);
    this.volumesById.set(id, vol);
    if (id >= this.nextId) this.nextId = id + 1;
    return vol;
  }

  private addNode(id: number, vol: VolumeRec, kind: 'head' | 'snap', name: string, description: string,
    createdMs: number, epoch: number, map: NodeMap): NodeRec {
    const node: NodeRec = { id, vol, kind, name, description, createdMs, epoch, map, view: null, deleted: false, durable: true };
    this.nodes.set(id, node);
    if (kind === 'head') vol.head = node;
    else {
      vol.snaps.push(node);
      if (epoch + 1 > this.epoch) this.epoch = epoch + 1;
    }
    if (id >= this.nextId) this.nextId = id + 1;
    return node;
  }

  private dropNode(node: NodeRec): void {
    node.map.release();
    node.deleted = true;
    this.nodes.delete(node.id);
    const i = node.vol.snaps.indexOf(node);
    if (i >= 0) node.vol.snaps.splice(i, 1);
  }

  private dropVolume(vol: VolumeRec): void {
    for (const s of [...vol.snaps]) this.dropNode(s);
    this.dropNode(vol.head);
    vol.deleted = true;
    this.volumes.delete(vol.name);
    this.volumesById.delete(vol.id);
  }

  // ------------------------------------------------------------------ records

  private volumeRecord(v: VolumeRec): Buffer {
    const w = new RecordWriter(Rec.Volume).u32(v.id).str(v.name).u64(v.size).u32(v.chunkSize).f64(v.createdMs);
    if (v.backing) w.u8(1).str(v.backing.path).u64(v.backing.size).f64(v.backing.mtimeMs).u32(v.backing.sample);
    else w.u8(0);
    if (v.origin) w.u8(1).str(v.origin.volume).str(v.origin.snapshot);
    else w.u8(0);
    return w.finish();
  }

  private nodeRecord(type: Rec, n: NodeRec, src: number): Buffer {
    return new RecordWriter(type).u32(n.id).u32(n.vol.id).u8(n.kind === 'head' ? NODE_HEAD : NODE_SNAP)
      .str(n.name).str(n.description).f64(n.createdMs).u32(n.epoch).u32(src).finish();
  }

  /** The whole state as records (a checkpoint), built synchronously so it is one instant. */
  serializeCheckpoint(): Buffer[] {
    const out: Buffer[] = [new RecordWriter(Rec.State).u32(this.epoch).u32(this.nextId).finish()];
    for (const v of this.volumes.values()) out.push(this.volumeRecord(v));
    const pageIds = new Map<Page, number>();
    const l1Ids = new Map<L1, number>();
    const nodes = [...this.nodes.values()].sort((a, b) => a.id - b.id);
    for (const n of nodes) {
      const l1 = n.map.l1;
      let l1Id = l1Ids.get(l1);
      if (l1Id === undefined) {
        const pairs: number[] = [];
        for (let i = 0; i < l1.pages.length; i++) {
          const p = l1.pages[i];
          if (!p) continue;
          let pid = pageIds.get(p);
          if (pid === undefined) {
            pid = pageIds.size + 1;
            pageIds.set(p, pid);
            out.push(new RecordWriter(Rec.Page, 8 + ENTRIES_PER_PAGE * 8).u32(pid).u32(n.vol.chunkSize).u32s(p.e, 0, p.e.length).finish());
          }
          pairs.push(i, pid);
        }
        l1Id = l1Ids.size + 1;
        l1Ids.set(l1, l1Id);
        const w = new RecordWriter(Rec.L1, 12 + pairs.length * 4).u32(l1Id).u32(l1.pages.length).u32(pairs.length / 2);
        for (const x of pairs) w.u32(x);
        out.push(w.finish());
      }
      out.push(this.nodeRecord(Rec.NodeCp, n, l1Id));
    }
    return out;
  }

  private hasPendingMetadata(): boolean {
    if (this.pending.length > 0) return true;
    for (const c of this.data.classes.values()) if (c.pendingFree.length > 0) return true;
    return false;
  }

  private hasPending(): boolean {
    if (this.pending.length > 0 || this.data.dirty.size > 0) return true;
    for (const c of this.data.classes.values()) if (c.pendingFree.length > 0) return true;
    return false;
  }

  // ------------------------------------------------------------------ commit

  /** Makes every write resolved before the call durable. Concurrent callers share commits. */
  commit(): Promise<void> {
    if (this.closed) return Promise.reject(new StoreError(StoreErrorCode.Closed, 'store is closed'));
    if (!this.commitRunning) return this.startCommit();
    // The running commit may have swapped its batch before our writes: wait for the next one.
    if (!this.commitQueued) {
      this.commitQueued = this.commitRunning.catch(() => undefined).then(() => {
        this.commitQueued = null;
        return this.startCommit();
      });
    }
    return this.commitQueued;
  }

  private startCommit(): Promise<void> {
    const p: Promise<void> = this.doCommit().finally(() => {
      if (this.commitRunning === p) this.commitRunning = null;
    });
    this.commitRunning = p;
    return p;
  }

  private async doCommit(): Promise<void> {
    const wantCp = this.forceCheckpoint || this.journalEnd > Math.max(this.opts.journalCompactBytes, this.checkpointLen * 2);
    if (!wantCp && !this.hasPending()) return;
    // The swap: everything below is one instant of the in-memory state.
    const records = this.pending;
    this.pending = [];
    const frees = this.data.takePendingFrees();
    const dirty = this.data.dirty;
    this.data.dirty = new Set<Segment>();
    const dirDirty = this.data.dirDirty;
    this.data.dirDirty = false;
    const cp = wantCp ? this.serializeCheckpoint() : null;
    this.forceCheckpoint = false;
    const becomeDurable = this.undurable;
    this.undurable = new Set<NodeRec>();
    const oldEnd = this.journalEnd;
    try {
      this.io.point(CrashPoint.BeforeDataSync);
      // One fdatasync at a time: each holds a libuv pool thread for as long as the disk takes,
      // and a pool full of them starved every read and write behind them (500 ms stalls).
      for (const s of dirty) if (s.file) await s.file.datasync();
      if (dirDirty) await this.io.syncDir(this.dataDir);
      this.io.point(CrashPoint.AfterDataSync);
      if (cp) await this.writeCheckpoint(cp);
      else if (records.length > 0) await this.appendCommit(records);
    } catch (e) {
      this.pending = records.concat(this.pending);
      this.data.restorePendingFrees(frees);
      for (const s of dirty) if (s.file) this.data.dirty.add(s); // not the deleted ones
      if (dirDirty) this.data.dirDirty = true;
      if (cp) this.forceCheckpoint = true;
      for (const n of becomeDurable) this.undurable.add(n);
      if (this.journal && this.journalEnd === oldEnd) await this.journal.truncate(oldEnd).catch(() => undefined);
      throw e instanceof StoreError || e instanceof StorageError ? e : new StorageError('EIO', `commit failed: ${(e as Error).message}`, { cause: e });
    }
    this.data.committedFrees(frees);
    for (const n of becomeDurable) n.durable = true;
    if (frees.length > 0) this.scheduleCompaction(this.compactDelayMs);
  }

  /**
   * The commit of a control operation that already changed the in-memory state. If it fails, the
   * change stays (its records wait for the next commit: undoing it could not be made atomic with
   * what writes did since), and the caller learns exactly that.
   */
  private async commitChange(what: string): Promise<void> {
    try {
      await this.commit();
    } catch (e) {
      const errno = e instanceof StorageError ? e.errno : 'EIO';
      throw new UncommittedChangeError(errno, `${what}: ${(e as Error).message}; the change is applied but not yet durable: ` +
        'the next successful commit (a FLUSH, or the periodic commit) makes it durable', { cause: e });
    }
  }

  private async appendCommit(records: Buffer[]): Promise<void> {
    const seq = this.commitSeq + 1;
    // Not pushed onto `records`: a failed append hands them back to `pending` for the next try,
    // and a Commit record left among them would end that transaction early on replay.
    const buf = joinRecords([...records, commitRecord(seq)]);
    const len = buf.length;
    const j = this.journal!;
    // Two writes so that a crash test can cut the append in the middle.
    const half = Math.floor(len / 2);
    await j.write(buf, 0, half, this.journalEnd);
    this.io.point(CrashPoint.JournalAppendMid);
    await j.write(buf, half, len - half, this.journalEnd + half);
    this.io.point(CrashPoint.BeforeJournalSync);
    await j.datasync();
    this.io.point(CrashPoint.AfterJournalSync);
    this.journalEnd += len;
    this.commitSeq = seq;
  }

  /** Compaction of the metadata: a new journal generation starting with a full checkpoint. */
  private async writeCheckpoint(records: Buffer[]): Promise<void> {
    // A new generation for every attempt: a failed one may have left its superblock durable,
    // naming its file, which a retry must then not truncate (stale files go at the next open).
    const gen = Math.max(this.journalGen, this.triedJournalGen) + 1;
    this.triedJournalGen = gen;
    const seq = this.commitSeq + 1;
    const path = `${this.dataDir}/${journalFile(gen)}`;
    const buf = joinRecords([encodeJournalHeader(gen), ...records, commitRecord(seq)]);
    const len = buf.length;
    const f = await this.io.open(path, 'create');
    try {
      await f.truncate(0);
      await f.write(buf, 0, len, 0);
      this.io.point(CrashPoint.CheckpointWritten);
      await f.datasync();
      await this.io.syncDir(this.dataDir);
      const sb = encodeSuperblock({ version: FORMAT_VERSION, seq: this.sbSeq + 1, journalGen: gen, checkpointLen: len, segmentBytes: this.data.segmentBytes });
      const slot = (this.sbSeq + 1) % 2;
      await this.sbFile!.write(sb, 0, sb.length, slot * SUPERBLOCK_SLOT);
      this.io.point(CrashPoint.SuperblockWritten);
      await this.sbFile!.datasync();
      this.io.point(CrashPoint.AfterSuperblockSync);
    } catch (e) {
      await f.close().catch(() => undefined);
      throw e;
    }
    const old = this.journal;
    const oldGen = this.journalGen;
    this.journal = f;
    this.journalGen = gen;
    this.journalEnd = len;
    this.checkpointLen = len;
    this.sbSeq++;
    this.commitSeq = seq;
    if (old) {
      await old.close().catch(() => undefined);
      await this.io.unlink(`${this.dataDir}/${journalFile(oldGen)}`).catch(() => undefined);
    }
    // Failed attempts' files (disk full): `check` after a clean close would call them leaks.
    for (let g = oldGen + 1; g < gen; g++) await this.io.unlink(`${this.dataDir}/${journalFile(g)}`).catch(() => undefined);
  }

  /** Writes a checkpoint at the next commit (tests and the compactor use it). */
  async checkpoint(): Promise<void> {
    this.forceCheckpoint = true;
    await this.commit();
  }

  private deleteSegment(cls: ChunkClass, seg: number): void {
    cls.deleting.add(seg);
    this.segDeletes = this.segDeletes.then(async () => {
      try {
        if ((cls.segUse[seg] ?? 0) !== 0) return;
        cls.deleting.add(seg);
        const s = cls.segments.get(seg);
        cls.segments.delete(seg);
        if (s) {
          this.data.dirty.delete(s);
          const f = s.file ?? (s.opening ? await s.opening.catch(() => null) : null);
          // A commit that swapped this segment into its dirty set earlier skips it from now on
          // (it syncs only segments with a file) instead of syncing a closed descriptor.
          s.file = null;
          s.opening = null;
          if (f) await f.close().catch(() => undefined);
        }
        await this.io.unlink(`${this.dataDir}/${segmentFile(cls.log2, seg)}`);
        this.io.point(CrashPoint.SegmentDeleted);
      } catch (e) {
        this.opts.log('warn', `could not delete segment ${seg}: ${(e as Error).message}`);
      } finally {
        cls.deleting.delete(seg);
        if ((cls.segUse[seg] ?? 0) === 0) cls.evacuating.delete(seg); // compacted: its slots are free again
        cls.resetHint(seg);
      }
    });
  }

  /** Truncates a segment file after its last in-use slot (freed tails go back to the file system). */
  private trimSegment(cls: ChunkClass, seg: number): void {
    if (cls.deleting.has(seg)) return;
    cls.deleting.add(seg); // no allocation in this segment while we cut it
    this.segDeletes = this.segDeletes.then(async () => {
      try {
        const end = cls.usedEnd(seg);
        if (end === 0) return;
        const s = cls.segments.get(seg);
        const f = s?.file ?? (s?.opening ? await s.opening.catch(() => null) : null);
        if (!f) return;
        if ((await f.size()) > end) await f.truncate(end);
        if (s) s.knownSize = end;
      } catch (e) {
        this.opts.log('warn', `could not truncate segment ${seg}: ${(e as Error).message}`);
      } finally {
        cls.deleting.delete(seg);
        cls.resetHint(seg); // allocations during the cut passed over its free slots
        if (cls.segUse[seg] === 0) this.deleteSegment(cls, seg);
      }
    });
  }

  /** Waits for background segment deletions (tests). */
  async settle(): Promise<void> {
    await this.segDeletes;
  }

  // ------------------------------------------------------------------ compaction

  /**
   * Empties every segment the rule (COMPACT_*, findVictims) picks, pass after pass, each pass its
   * own control operation; resolves once the emptied files are gone (unless a read still holds
   * their slots).
   */
  async compact(): Promise<CompactStats> {
    this.checkOpen();
    const total: CompactStats = { segments: 0, chunksMoved: 0, bytesMoved: 0, maxHoldMs: 0 };
    for (;;) {
      const r = await this.serial(() => this.compactPass());
      if (!r) break;
      total.segments += r.segments;
      total.chunksMoved += r.chunksMoved;
      total.bytesMoved += r.bytesMoved;
      total.maxHoldMs = Math.max(total.maxHoldMs, r.maxHoldMs);
      if (r.chunksMoved === 0) break; // the segment emptied by itself; nothing is being copied
    }
    await this.segDeletes;
    return total;
  }

  private scheduleCompaction(delayMs: number): void {
    if (!this.autoCompact || this.opts.inspectOnly || this.closing || this.closed) return;
    // Never sooner than the pause after the last pass (its own checkpoint frees slots too).
    const due = Math.max(Date.now() + delayMs, this.compactNotBefore);
    delayMs = due - Date.now();
    if (this.compactTimer) {
      if (this.compactDue <= due) return;
      clearTimeout(this.compactTimer);
    }
    this.compactDue = due;
    this.compactTimer = setTimeout(() => {
      this.compactTimer = null;
      this.backgroundCompact();
    }, delayMs);
    this.compactTimer.unref();
  }

  private backgroundCompact(): void {
    if (!this.autoCompact || this.closing || this.closed) return;
    this.serial(() => this.compactPass()).then(
      // More may qualify: look again after a pause that bounds the compactor's share of the time.
      (r) => {
        if (r) this.scheduleCompaction(1);
      },
      (e: unknown) => this.opts.log('warn', `background compaction failed: ${(e as Error).message}`),
    );
  }

  /** One pass (see compactSegments): null when nothing qualifies or the pass gave up. */
  private async compactPass(): Promise<CompactStats | null> {
    if (this.closing || this.closed) return null;
    const v = this.findVictims();
    if (!v) return null;
    // Room for the copies and for the checkpoint that must follow the switch (the old journal
    // stays until it is durable): without it every commit after the switch would fail (ENOSPC)
    // until space came back, where leaving the segments sparse costs nothing.
    let live = 0;
    for (const seg of v.segs) live += (v.cls.segUse[seg] ?? 0) * v.cls.chunkSize;
    const need = live + this.checkpointLen + COMPACT_SPACE_MARGIN_BYTES;
    const free = await this.io.freeBytes(this.dataDir);
    if (free < need) {
      this.opts.log('info', `compaction skipped: it needs ${need} free bytes in ${this.dataDir}, ${free} are free`);
      return null;
    }
    const t0 = process.hrtime.bigint();
    const r = await this.compactSegments(v.cls, v.segs);
    this.lastPassMs = Number(process.hrtime.bigint() - t0) / 1e6;
    // The next background pass waits 3x this one: the compactor takes at most COMPACT_DUTY_MAX.
    this.compactNotBefore = Date.now() + this.lastPassMs * (1 / COMPACT_DUTY_MAX - 1);
    if (r) {
      this.opts.log('info', `compaction emptied ${r.segments} of ${v.segs.length} segments of ${v.cls.chunkSize}-byte chunks: ` +
        `moved ${r.chunksMoved} chunks (${r.bytesMoved} bytes) in ${this.lastPassMs.toFixed(1)} ms, writes held ${r.maxHoldMs.toFixed(2)} ms`);
    }
    return r;
  }

  /**
   * The segments of one class a pass empties. A candidate is at most COMPACT_LIVE_RATIO_MAX in
   * use and has at least COMPACT_WASTE_RATIO_MIN of its slots as free holes below its last used
   * slot. Most holes first (ties: the highest segment), as many as COMPACT_PASS_BYTES of live
   * chunks, each victim's live chunks (with those of lower victims) fitting in the free slots of
   * lower non-victim segments: data only moves down, so passes never undo each other. A pass is
   * worth it only if it gives back at least the checkpoint it writes (COMPACT_CHEAP_CHECKPOINT_BYTES).
   */
  private findVictims(): { cls: ChunkClass; segs: number[] } | null {
    let best: { cls: ChunkClass; segs: number[]; bytes: number } | null = null;
    for (const cls of this.data.classes.values()) {
      const sps = cls.slotsPerSeg;
      const nSegs = Math.ceil(cls.state.length / sps);
      const freeBelow = new Float64Array(nSegs + 1); // free slots in usable segments below each one
      const cands: { seg: number; use: number; waste: number }[] = [];
      for (let seg = 0; seg < nSegs; seg++) {
        const use = cls.segUse[seg] ?? 0;
        const blocked = cls.deleting.has(seg) || cls.evacuating.has(seg);
        freeBelow[seg + 1] = (freeBelow[seg] as number) + (blocked ? 0 : sps - use);
        if (blocked || use === 0 || use > sps * COMPACT_LIVE_RATIO_MAX) continue;
        const waste = cls.usedEnd(seg) / cls.chunkSize - use;
        if (waste >= sps * COMPACT_WASTE_RATIO_MIN) cands.push({ seg, use, waste });
      }
      cands.sort((x, y) => y.waste - x.waste || y.seg - x.seg);
      const budget = Math.max(sps, Math.floor(COMPACT_PASS_BYTES / cls.chunkSize));
      // Chosen victims in segment order, each with its slack: the free slots of non-victims below
      // it minus the live chunks of it and of the victims below it (all copied below it). Adding
      // a victim c below v takes c's free slots out of v's and adds c's chunks: v loses sps.
      const chosen: number[] = [];
      const slack: number[] = [];
      let live = 0;
      let waste = 0;
      for (const c of cands) {
        if (live + c.use > budget) continue;
        let at = 0;
        while (at < chosen.length && (chosen[at] as number) < c.seg) at++;
        const own = (freeBelow[c.seg] as number) - sps * at - c.use;
        let fits = own >= 0;
        for (let i = at; i < slack.length && fits; i++) fits = (slack[i] as number) >= sps;
        if (!fits) continue;
        for (let i = at; i < slack.length; i++) slack[i] = (slack[i] as number) - sps;
        chosen.splice(at, 0, c.seg);
        slack.splice(at, 0, own);
        live += c.use;
        waste += c.waste;
        if (live >= budget) break;
      }
      const bytes = waste * cls.chunkSize;
      const worth = bytes >= this.checkpointLen || this.checkpointLen <= COMPACT_CHEAP_CHECKPOINT_BYTES;
      if (chosen.length > 0 && worth && (!best || bytes > best.bytes)) best = { cls, segs: chosen, bytes };
    }
    return best && { cls: best.cls, segs: best.segs };
  }

  /**
   * Moves the live chunks of segments `victims` (ascending) into free slots of lower segments:
   * 1. hold the class's writes only until in-flight ones drained, mark the victims evacuating (no
   *    allocation there, no write in place: a write to one of their chunks redirects), release;
   * 2. copy live slots in batches (reads under a read generation, so a slot freed meanwhile is
   *    not reused under the read); when writes took the free slots below, the victim being copied
   *    and those after it are dropped from the pass; fdatasync the copies — CompactCopied;
   * 3. switch synchronously: every entry of every unique page of the class naming an old slot
   *    names its copy (pages are shared: rewriting them in place keeps sharing and births; slot
   *    counts move with the entries), the old slots fall to pending free, unused copies go back;
   * 4. a checkpoint makes the switch durable (rewritten shared pages cannot be expressed as log
   *    records) — CompactSwitched; its frees are quarantined like any others and each emptied
   *    file is deleted once no read that looked up one of its old slots is running.
   * A crash before 4 leaves the old state with the copies as free slots (reclaimed at open).
   */
  private async compactSegments(cls: ChunkClass, victims: number[]): Promise<CompactStats | null> {
    const cs = cls.chunkSize;
    const sps = cls.slotsPerSeg;
    const t0 = process.hrtime.bigint();
    const release = await this.quiesce([...this.volumes.values()].filter((v) => v.cls === cls));
    for (const v of victims) cls.evacuating.add(v);
    release();
    const maxHoldMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const moveTo = new Map<number, Uint32Array>(); // victim -> its slots' copies (UNMAPPED: none)
    const copies: number[] = [];
    const targets = new Set<number>();
    const drop = (v: number): void => {
      moveTo.delete(v);
      cls.evacuating.delete(v);
      cls.resetHint(v);
    };
    let switched = false;
    try {
      const per = Math.max(1, Math.min(sps, Math.floor(COMPACT_BATCH_BYTES / cs)));
      const buf = Buffer.allocUnsafe(per * cs);
      let short = false;
      for (const victim of victims) {
        if (short) {
          drop(victim);
          continue;
        }
        const first = victim * sps;
        const end = first + sps;
        const to = new Uint32Array(sps).fill(UNMAPPED);
        moveTo.set(victim, to);
        let s = first;
        // A victim whose every chunk was rewritten meanwhile is deleted by the frees (and leaves
        // `evacuating` then): nothing left to copy.
        while (s < end && cls.evacuating.has(victim) && !short) {
          const batch: number[] = [];
          const g = this.data.beginRead();
          try {
            for (; s < end && batch.length < per; s++) if (cls.count(s) > 0) batch.push(s);
            const reads: Promise<void>[] = [];
            forRuns(batch, (i, j) => reads.push(this.data.read(cls, batch[i] as number, 0, (j - i) * cs, buf, i * cs)));
            await Promise.all(reads);
          } finally {
            this.data.endRead(g);
          }
          const dst: number[] = [];
          for (let i = 0; i < batch.length && !short; i++) {
            const t = cls.alloc();
            copies.push(t);
            dst.push(t);
            short = cls.segmentOf(t) >= victim; // writes took the free slots below meanwhile
          }
          if (short) break;
          const writes: Promise<void>[] = [];
          forRuns(dst, (i, j) => writes.push(this.data.write(cls, dst[i] as number, 0, buf, i * cs, (j - i) * cs)), sps);
          // All settled before a failure releases the copies: no write may land in a reused slot.
          for (const r of await Promise.allSettled(writes)) if (r.status === 'rejected') throw r.reason;
          for (let i = 0; i < batch.length; i++) {
            to[(batch[i] as number) - first] = dst[i] as number;
            targets.add(cls.segmentOf(dst[i] as number));
          }
        }
        if (short) drop(victim);
      }
      // The copies are durable before any durable state can name them (the checkpoint's data
      // sync would do it too, but by then the switch is made: syncing first keeps a copy that
      // cannot be synced from ever being named).
      for (const seg of targets) await cls.segments.get(seg)?.file?.datasync();
      this.io.point(CrashPoint.CompactCopied);
      // The switch: synchronous, so no read or write sees half of it. A victim that left
      // `evacuating` was emptied and deleted by frees meanwhile: its slots may hold new chunks now.
      for (const v of moveTo.keys()) if (!cls.evacuating.has(v)) moveTo.delete(v);
      const l1s = new Set<L1>();
      for (const n of this.nodes.values()) if (n.vol.cls === cls) l1s.add(n.map.l1);
      const pages = new Set<Page>();
      for (const l1 of l1s) for (const p of l1.pages) if (p) pages.add(p);
      let lo = Infinity;
      let hi = -1;
      for (const v of moveTo.keys()) {
        lo = Math.min(lo, v * sps);
        hi = Math.max(hi, (v + 1) * sps);
      }
      let remapped = 0;
      const missed = new Set<number>();
      for (const p of pages) {
        const e = p.e;
        for (let i = 0; i < e.length; i += 2) {
          const x = e[i] as number;
          if (x < lo || x >= hi) continue;
          const v = Math.floor(x / sps);
          const to = moveTo.get(v);
          if (!to) continue;
          const y = to[x - v * sps] as number;
          if (y === UNMAPPED) {
            missed.add(v);
            continue;
          }
          e[i] = y;
          cls.ref(y);
          cls.unref(x);
          remapped++;
        }
      }
      switched = true;
      const unused = copies.filter((t) => cls.count(t) === 0); // rewritten or dropped meanwhile
      if (unused.length > 0) this.data.releaseUnmapped(cls, unused);
      for (const v of missed) {
        // Cannot happen (nothing allocates in a victim); if it did, that segment simply stays.
        this.opts.log('warn', `compaction of ${segmentFile(cls.log2, v)}: entries name uncopied slots`);
        drop(v);
      }
      if (remapped > 0) {
        await this.checkpoint();
        this.io.point(CrashPoint.CompactSwitched);
      }
      const moved = copies.length - unused.length;
      if (moveTo.size === 0) return null;
      return { segments: moveTo.size, chunksMoved: moved, bytesMoved: moved * cs, maxHoldMs };
    } finally {
      if (!switched) {
        this.data.releaseUnmapped(cls, copies); // never mapped: free at once
        for (const v of victims) drop(v);
      }
    }
  }

  // ------------------------------------------------------------------ data path

  private live(vol: VolumeRec): void {
    if (this.closed) throw new StorageError('ESHUTDOWN', 'store is closed');
    if (vol.deleted) throw new StorageError('EIO', `volume '${vol.name}' was deleted`);
    if (vol.backingError) throw new StorageError('EIO', vol.backingError.message);
  }

  private async enter(vol: VolumeRec): Promise<void> {
    while (vol.barrier) await vol.barrier;
    this.live(vol);
    vol.inflight++;
  }

  private leave(vol: VolumeRec): void {
    if (--vol.inflight === 0 && vol.drained) vol.drained();
  }

  /** Holds new writes to the volumes and waits for in-flight ones; returns the release. */
  private async quiesce(vols: VolumeRec[]): Promise<() => void> {
    const releases: (() => void)[] = [];
    for (const vol of vols) {
      while (vol.barrier) await vol.barrier;
      let release!: () => void;
      vol.barrier = new Promise<void>((r) => (release = r));
      releases.push(() => {
        vol.barrier = null;
        release();
      });
      if (vol.inflight > 0) {
        await new Promise<void>((r) => (vol.drained = r));
        vol.drained = null;
      }
    }
    return () => {
      for (const r of releases) r();
    };
  }

  private tryLock(vol: VolumeRec, first: number, last: number): (() => void) | null {
    const locks = vol.locks;
    for (let c = first; c <= last; c++) if (locks.has(c)) return null;
    let release!: () => void;
    const p = new Promise<void>((r) => (release = r));
    for (let c = first; c <= last; c++) locks.set(c, p);
    return () => {
      for (let c = first; c <= last; c++) locks.delete(c);
      release();
    };
  }

  private async lock(vol: VolumeRec, first: number, last: number): Promise<() => void> {
    for (;;) {
      const got = this.tryLock(vol, first, last);
      if (got) return got;
      let wait: Promise<void> | undefined;
      for (let c = first; c <= last && !wait; c++) wait = vol.locks.get(c);
      if (wait) await wait;
    }
  }

  private async readBacking(vol: VolumeRec, pos: number, len: number, into: Buffer, off: number): Promise<void> {
    const bsize = vol.backing ? vol.backing.size : 0;
    const n = Math.max(0, Math.min(len, bsize - pos));
    if (n > 0) {
      const got = await vol.backingFile!.read(into, off, n, pos);
      if (got < n) into.fill(0, off + got, off + n);
    }
    if (n < len) into.fill(0, off + n, off + len);
  }

  /** Reads [offset, offset+len) of a node into into[off..]: one I/O per run of contiguous slots. */
  async readNode(node: NodeRec, offset: number, len: number, into: Buffer, off = 0): Promise<void> {
    const vol = node.vol;
    this.live(vol);
    if (node.deleted) throw new StorageError('EIO', `snapshot '${vol.name}@${node.name}' was deleted`);
    if (offset < 0 || len < 0 || offset + len > vol.size) throw new StorageError('EINVAL', `read [${offset}, +${len}) past the end (${vol.size})`);
    if (len === 0) return;
    const g = this.data.beginRead();
    try {
      const cs = vol.chunkSize;
      const map = node.map;
      const cls = vol.cls;
      const ios: Promise<void>[] = [];
      // Current run: kind 0 none, 1 slots, 2 backing.
      let kind = 0;
      let runSlot = 0;
      let runInner = 0;
      let runPos = 0;
      let runOff = 0;
      let runLen = 0;
      const flushRun = (): void => {
        if (kind === 1) ios.push(this.data.read(cls, runSlot, runInner, runLen, into, runOff));
        else if (kind === 2) ios.push(this.readBacking(vol, runPos, runLen, into, runOff));
        kind = 0;
      };
      const end = offset + len;
      let pos = offset;
      while (pos < end) {
        const c = Math.floor(pos / cs);
        const cStart = c * cs;
        const n = Math.min(end, cStart + cs) - pos;
        const s = map.slot(c);
        const o = off + pos - offset;
        if (isSlot(s)) {
          if (kind === 1 && runSlot + (runInner + runLen) / cs === s && cls.segmentOf(s) === cls.segmentOf(runSlot) && (runInner + runLen) % cs === 0) {
            runLen += n;
          } else {
            flushRun();
            kind = 1;
            runSlot = s;
            runInner = pos - cStart;
            runOff = o;
            runLen = n;
          }
        } else if (s === UNMAPPED && vol.backing && pos < vol.backing.size) {
          if (kind === 2) runLen += n;
          else {
            flushRun();
            kind = 2;
            runPos = pos;
            runOff = o;
            runLen = n;
          }
        } else {
          flushRun();
          into.fill(0, o, o + n);
        }
        pos += n;
      }
      flushRun();
      if (ios.length === 1) await ios[0];
      else if (ios.length > 1) await Promise.all(ios);
    } finally {
      this.data.endRead(g);
    }
  }

  async write(vol: VolumeRec, offset: number, data: Buffer, len: number, fua: boolean): Promise<void> {
    if (offset < 0 || offset + len > vol.size) throw new StorageError('ENOSPC', `write [${offset}, +${len}) past the end (${vol.size})`);
    if (len > 0) {
      if (vol.barrier) await this.enter(vol);
      else {
        this.live(vol);
        vol.inflight++;
      }
      try {
        const first = Math.floor(offset / vol.chunkSize);
        const last = Math.floor((offset + len - 1) / vol.chunkSize);
        const unlock = this.tryLock(vol, first, last) ?? (await this.lock(vol, first, last));
        try {
          await this.writeLocked(vol, offset, data, len);
        } finally {
          unlock();
        }
      } finally {
        this.leave(vol);
      }
    }
    if (fua) await this.commit();
  }

  /** The write path proper; the caller holds the chunk locks. `data` may be shorter-lived than us. */
  private async writeLocked(vol: VolumeRec, offset: number, data: Buffer, len: number): Promise<void> {
    const cs = vol.chunkSize;
    const cls = vol.cls;
    const map = vol.head.map;
    const epoch = this.epoch;
    const end = offset + len;
    // Planned I/O runs; `fresh` are chunks redirected to new slots (mapped after the data lands).
    const runs: { slot: number; inner: number; src: Buffer; srcOff: number; len: number }[] = [];
    const fresh: { c: number; slot: number }[] = [];
    const rebirth: number[] = [];
    const merges: Promise<void>[] = [];
    let pos = offset;
    try {
      while (pos < end) {
        const c = Math.floor(pos / cs);
        const cStart = c * cs;
        const inner = pos - cStart;
        const n = Math.min(end, cStart + cs) - pos;
        let slot: number;
        let src = data;
        let srcOff = pos - offset;
        let ioInner = inner;
        let ioLen = n;
        // Not in place into a segment being compacted: its chunk may be being copied right now.
        if (map.exclusive(c) && !cls.isEvacuating(map.slot(c))) {
          slot = map.slot(c);
          if (map.birth(c) !== epoch) rebirth.push(c);
        } else {
          slot = cls.alloc();
          fresh.push({ c, slot });
          if (n !== cs) {
            // Partial chunk: merge with the old content (slot, backing or zeros) into a whole one.
            const buf = Buffer.allocUnsafe(cs);
            const from = pos - offset;
            const tail = vol.size - cStart;
            merges.push(this.readNode(vol.head, cStart, Math.min(cs, tail), buf, 0).then(() => {
              if (tail < cs) buf.fill(0, tail);
              data.copy(buf, inner, from, from + n);
            }));
            src = buf;
            srcOff = 0;
            ioInner = 0;
            ioLen = cs;
          }
        }
        const prev = runs[runs.length - 1];
        if (prev && prev.src === src && src === data && prev.srcOff + prev.len === srcOff && (prev.inner + prev.len) % cs === 0 &&
          ioInner === 0 && prev.slot + (prev.inner + prev.len) / cs === slot && cls.segmentOf(prev.slot) === cls.segmentOf(slot)) {
          prev.len += ioLen;
        } else runs.push({ slot, inner: ioInner, src, srcOff, len: ioLen });
        pos += n;
      }
      if (merges.length > 0) await Promise.all(merges);
      if (runs.length === 1) {
        const r = runs[0]!;
        await this.data.write(cls, r.slot, r.inner, r.src, r.srcOff, r.len);
      } else {
        // All settled before a failure releases the fresh slots: no write may land in a slot
        // that another write was given meanwhile.
        const done = await Promise.allSettled(runs.map((r) => this.data.write(cls, r.slot, r.inner, r.src, r.srcOff, r.len)));
        for (const d of done) if (d.status === 'rejected') throw d.reason;
      }
      this.io.point(CrashPoint.DataWritten);
    } catch (e) {
      this.data.releaseUnmapped(cls, fresh.map((f) => f.slot)); // never mapped: free at once
      throw e;
    }
    if (vol.deleted) {
      this.data.releaseUnmapped(cls, fresh.map((f) => f.slot));
      return;
    }
    // The data is in place: now map it (records go to the next commit).
    if (fresh.length > 0) {
      const ep = this.epoch;
      for (const f of fresh) map.set(f.c, f.slot, ep);
      this.logEntries(vol.head, fresh.map((f) => f.c));
    }
    if (rebirth.length > 0) {
      const ep = this.epoch;
      for (const c of rebirth) map.set(c, map.slot(c), ep);
      this.logEntries(vol.head, rebirth);
    }
  }

  /** Appends MapRun records for chunks of a node (sorted, grouped into runs). */
  private logEntries(node: NodeRec, chunks: number[]): void {
    const map = node.map;
    let i = 0;
    while (i < chunks.length) {
      let j = i + 1;
      while (j < chunks.length && chunks[j] === (chunks[j - 1] as number) + 1) j++;
      const first = chunks[i] as number;
      const n = j - i;
      const w = new RecordWriter(Rec.MapRun, 16 + n * 8).u32(node.id).u64(first).u32(n);
      for (let c = first; c < first + n; c++) w.u32(map.slot(c)).u32(map.birth(c));
      this.pending.push(w.finish());
      i = j;
    }
  }

  async discard(vol: VolumeRec, offset: number, len: number, opts: { fua: boolean; noHole: boolean; fast: boolean }): Promise<void> {
    if (offset < 0 || offset + len > vol.size) throw new StorageError('ENOSPC', `zero [${offset}, +${len}) past the end (${vol.size})`);
    // FAST_ZERO always holds: whole chunks are remapped, only the partial ends write zeros.
    if (len > 0) {
      await this.enter(vol);
      try {
        const cs = vol.chunkSize;
        const first = Math.floor(offset / cs);
        const last = Math.floor((offset + len - 1) / cs);
        const unlock = this.tryLock(vol, first, last) ?? (await this.lock(vol, first, last));
        try {
          const end = offset + len;
          const changed: number[] = [];
          const map = vol.head.map;
          const bsize = vol.backing ? vol.backing.size : 0;
          let pos = offset;
          try {
            while (pos < end) {
              const c = Math.floor(pos / cs);
              const cStart = c * cs;
              const n = Math.min(end, cStart + cs) - pos;
              const wholeChunk = pos === cStart && (n === cs || cStart + n === vol.size);
              if (!wholeChunk) {
                await this.writeLocked(vol, pos, ZEROES, n);
              } else {
                // NO_HOLE: zeros that block status reports as data-allocated, still without data.
                const target = opts.noHole ? ZERO_ALLOCATED : cStart < bsize ? ZERO : UNMAPPED;
                if (map.slot(c) !== target) {
                  map.set(c, target, this.epoch);
                  changed.push(c);
                }
              }
              pos += n;
            }
          } finally {
            // Also when the partial tail failed (ENOSPC): the chunks already remapped must reach
            // the journal, or memory and the committed store would disagree after a reopen.
            if (changed.length > 0) this.logEntries(vol.head, changed);
          }
        } finally {
          unlock();
        }
      } finally {
        this.leave(vol);
      }
    }
    if (opts.fua) await this.commit();
  }

  async extents(node: NodeRec, offset: number, len: number): Promise<Extent[]> {
    const vol = node.vol;
    this.live(vol);
    if (offset < 0 || len <= 0 || offset + len > vol.size) throw new StorageError('EINVAL', `extents [${offset}, +${len}) out of range`);
    const cs = vol.chunkSize;
    const bsize = vol.backing ? vol.backing.size : 0;
    const out: Extent[] = [];
    const push = (n: number, hole: boolean, zero: boolean): void => {
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.zero === zero) last.length += n;
      else out.push({ length: n, hole, zero });
    };
    const pages = node.map.l1.pages;
    const end = offset + len;
    let pos = offset;
    while (pos < end && out.length < EXTENTS_MAX) {
      const c = Math.floor(pos / cs);
      const page = pages[c >>> PAGE_SHIFT];
      // A missing page: ENTRIES_PER_PAGE unmapped chunks in one step.
      const stepEnd = page ? Math.min(end, (c + 1) * cs) : Math.min(end, ((c >>> PAGE_SHIFT) + 1) * ENTRIES_PER_PAGE * cs);
      const s = page ? (page.e[(c & (ENTRIES_PER_PAGE - 1)) * 2] as number) : UNMAPPED;
      if (isSlot(s)) push(stepEnd - pos, false, false);
      else if (s === ZERO) push(stepEnd - pos, true, true);
      else if (s === ZERO_ALLOCATED) push(stepEnd - pos, false, true);
      else if (pos >= bsize) push(stepEnd - pos, true, true);
      else if (stepEnd <= bsize) push(stepEnd - pos, true, false);
      else {
        push(bsize - pos, true, false);
        push(stepEnd - bsize, true, true);
      }
      pos = stepEnd;
    }
    return out;
  }

  // ------------------------------------------------------------------ Store API

  private vol(name: string): VolumeRec {
    const v = this.volumes.get(name);
    if (!v) throw new StoreError(StoreErrorCode.VolumeNotFound, `volume '${name}' not found`);
    return v;
  }

  private snap(volume: string, name: string): NodeRec {
    const s = this.vol(volume).snaps.find((n) => n.name === name);
    if (!s) throw new StoreError(StoreErrorCode.SnapshotNotFound, `snapshot '${volume}@${name}' not found`);
    return s;
  }

  private checkOpen(): void {
    if (this.closed) throw new StoreError(StoreErrorCode.Closed, 'store is closed');
  }

  private checkName(kind: string, name: string): void {
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
      throw new StoreError(StoreErrorCode.InvalidName, `invalid ${kind} name '${name}': 1-128 characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'`);
    }
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

  spaceOf(node: NodeRec): Space {
    const cs = node.vol.chunkSize;
    const cls = node.vol.cls;
    const l1Alone = node.map.l1.refs === 1;
    let prevEpoch = 0;
    const snaps = node.vol.snaps;
    if (node.kind === 'head') prevEpoch = snaps.length > 0 ? (snaps[snaps.length - 1] as NodeRec).epoch : 0;
    else {
      const i = snaps.indexOf(node);
      prevEpoch = i > 0 ? (snaps[i - 1] as NodeRec).epoch : 0;
    }
    let referenced = 0;
    let used = 0;
    let written = 0;
    node.map.forEachMapped((_c, s, birth, page) => {
      if (!isSlot(s)) return;
      referenced += cs;
      if (l1Alone && page.refs === 1 && cls.count(s) === 1) used += cs;
      if (birth > prevEpoch) written += cs;
    });
    return { referenced, used, written };
  }

  listVolumes(): VolumeInfo[] {
    return [...this.volumes.values()].sort((a, b) => a.id - b.id).map((v) => this.info(v));
  }

  private info(v: VolumeRec): VolumeInfo {
    return {
      name: v.name, size: v.size, chunkSize: v.chunkSize, backing: v.backing ? v.backing.path : null,
      origin: v.origin ? { ...v.origin } : null, created: isoTime(v.createdMs), snapshots: v.snaps.length,
      space: this.spaceOf(v.head),
    };
  }

  volumeInfo(name: string): VolumeInfo {
    return this.info(this.vol(name));
  }

  async createVolume(spec: VolumeSpec): Promise<VolumeInfo> {
    this.checkOpen();
    this.checkName('volume', spec.name);
    const chunkSize = spec.chunkSize ?? CHUNK_SIZE_DEFAULT;
    if (!Number.isInteger(chunkSize) || chunkSize < CHUNK_SIZE_MIN || chunkSize > CHUNK_SIZE_MAX || (chunkSize & (chunkSize - 1)) !== 0) {
      throw new StoreError(StoreErrorCode.InvalidArgument, `chunk size ${chunkSize} must be a power of two in ${CHUNK_SIZE_MIN}..${CHUNK_SIZE_MAX}`);
    }
    return this.serial(async () => {
      if (this.volumes.has(spec.name)) throw new StoreError(StoreErrorCode.NameTaken, `volume '${spec.name}' exists`);
      let backing: BackingRec | null = null;
      let backingFile: IoFile | null = null;
      if (spec.backing !== undefined) {
        const st = await this.io.stat(spec.backing);
        if (!st) throw new StoreError(StoreErrorCode.InvalidArgument, `backing file ${spec.backing} not found`);
        backingFile = await this.io.open(spec.backing, 'r');
        backing = { path: spec.backing, size: st.size, mtimeMs: st.mtimeMs, sample: await sampleChecksum(backingFile, st.size) };
      }
      const size = spec.size ?? (backing ? Math.ceil(backing.size / 512) * 512 : undefined);
      if (size === undefined || !Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0) {
        await backingFile?.close();
        throw new StoreError(StoreErrorCode.InvalidArgument, `volume size ${size} must be a positive multiple of 512`);
      }
      if (Math.ceil(size / chunkSize) > VOLUME_CHUNKS_MAX) {
        await backingFile?.close();
        throw new StoreError(StoreErrorCode.InvalidArgument, `volume size ${size} too large for chunk size ${chunkSize}`);
      }
      const vol = this.addVolume(this.nextId++, spec.name, size, chunkSize, Date.now(), backing, null);
      vol.backingFile = backingFile;
      const head = this.addNode(this.nextId++, vol, 'head', '', '', vol.createdMs, 0, new NodeMap(vol.nChunks, vol.cls));
      this.pending.push(this.volumeRecord(vol), this.nodeRecord(Rec.Node, head, 0));
      await this.commitChange(`create volume '${spec.name}'`);
      return this.info(vol);
    });
  }

  async deleteVolume(name: string): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      const vol = this.vol(name);
      const release = await this.quiesce([vol]);
      try {
        this.dropVolume(vol);
        this.pending.push(new RecordWriter(Rec.VolumeDelete).u32(vol.id).finish());
        const bf = vol.backingFile;
        vol.backingFile = null;
        if (bf && ![...this.volumes.values()].some((v) => v.backingFile === bf)) await bf.close().catch(() => undefined);
        await this.commitChange(`delete volume '${name}'`);
      } finally {
        release();
      }
    });
  }

  head(volume: string): BlockDevice {
    const v = this.vol(volume);
    if (v.backingError) throw v.backingError;
    v.device ??= new HeadDevice(this, v);
    return v.device;
  }

  snapshotView(volume: string, snapshot: string): BlockDevice {
    const v = this.vol(volume);
    if (v.backingError) throw v.backingError;
    const s = this.snap(volume, snapshot);
    s.view ??= new SnapshotDevice(this, s);
    return s.view;
  }

  private snapInfo(s: NodeRec): SnapshotInfo {
    const clones: string[] = [];
    for (const v of this.volumes.values()) {
      if (v.origin && v.origin.volume === s.vol.name && v.origin.snapshot === s.name) clones.push(v.name);
    }
    return {
      volume: s.vol.name, name: s.name, created: isoTime(s.createdMs), description: s.description, size: s.vol.size,
      space: this.spaceOf(s), clones, durable: s.durable,
    };
  }

  async createSnapshot(volume: string, name: string, description = ''): Promise<SnapshotInfo> {
    this.checkOpen();
    this.checkName('snapshot', name);
    return this.serial(async () => {
      const vol = this.vol(volume);
      if (vol.snaps.some((s) => s.name === name)) throw new StoreError(StoreErrorCode.NameTaken, `snapshot '${volume}@${name}' exists`);
      // The barrier covers only the instant of sharing the map: writes answered before are in,
      // later ones see a shared map and redirect, so they cannot touch the snapshot's chunks and
      // may proceed while the commit makes it durable (their records follow its Node record in
      // the same or a later transaction). Holding writes over the commit's fdatasync stalled
      // them for hundreds of milliseconds under load.
      const release = await this.quiesce([vol]);
      let node: NodeRec;
      try {
        node = this.addNode(this.nextId++, vol, 'snap', name, description, Date.now(), this.epoch, vol.head.map.share());
        node.durable = false;
        this.undurable.add(node);
        this.pending.push(this.nodeRecord(Rec.Node, node, vol.head.id));
      } finally {
        release();
      }
      await this.commitChange(`create snapshot '${volume}@${name}'`);
      return this.snapInfo(node);
    });
  }

  listSnapshots(volume: string): SnapshotInfo[] {
    return this.vol(volume).snaps.map((s) => this.snapInfo(s));
  }

  snapshotInfo(volume: string, name: string): SnapshotInfo {
    return this.snapInfo(this.snap(volume, name));
  }

  async deleteSnapshot(volume: string, name: string): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      const vol = this.vol(volume);
      const node = this.snap(volume, name);
      // The barrier covers the commit: until the delete is durable, no write may go in place
      // into a slot the (still committed) snapshot holds.
      const release = await this.quiesce([vol]);
      try {
        this.dropNode(node);
        this.undurable.delete(node);
        this.pending.push(new RecordWriter(Rec.NodeDelete).u32(node.id).finish());
        await this.commitChange(`delete snapshot '${volume}@${name}'`);
      } finally {
        release();
      }
    });
  }

  async rollback(volume: string, snapshot: string): Promise<void> {
    this.checkOpen();
    return this.serial(async () => {
      const vol = this.vol(volume);
      const node = this.snap(volume, snapshot);
      const release = await this.quiesce([vol]);
      try {
        vol.head.map.assign(node.map);
        this.pending.push(new RecordWriter(Rec.Rollback).u32(vol.head.id).u32(node.id).finish());
        await this.commitChange(`roll back '${volume}' to '${snapshot}'`);
      } finally {
        release();
      }
    });
  }

  async clone(volume: string, snapshot: string, newName: string): Promise<VolumeInfo> {
    this.checkOpen();
    this.checkName('volume', newName);
    return this.serial(async () => {
      const src = this.vol(volume);
      const node = this.snap(volume, snapshot);
      if (this.volumes.has(newName)) throw new StoreError(StoreErrorCode.NameTaken, `volume '${newName}' exists`);
      const vol = this.addVolume(this.nextId++, newName, src.size, src.chunkSize, Date.now(), src.backing ? { ...src.backing } : null,
        { volume, snapshot });
      vol.backingFile = src.backingFile;
      vol.backingError = src.backingError;
      const head = this.addNode(this.nextId++, vol, 'head', '', '', vol.createdMs, 0, node.map.share());
      this.pending.push(this.volumeRecord(vol), this.nodeRecord(Rec.Node, head, node.id));
      await this.commitChange(`clone '${volume}@${snapshot}' as '${newName}'`);
      return this.info(vol);
    });
  }

  async diff(volume: string, from: string, to: string | null, page: { start?: number; limit?: number } = {}): Promise<DiffPage> {
    this.checkOpen();
    const vol = this.vol(volume);
    const a = this.snap(volume, from).map;
    const b = to === null ? vol.head.map : this.snap(volume, to).map;
    return diffMaps(a, b, vol.chunkSize, vol.size, page.start ?? 0, page.limit ?? DIFF_LIMIT_DEFAULT);
  }

  async flush(): Promise<void> {
    await this.commit();
  }

  stats(): StoreStats {
    let allocated = 0;
    for (const name of [SUPERBLOCK_FILE, journalFile(this.journalGen)]) allocated += this.io.statSync(`${this.dataDir}/${name}`)?.allocated ?? 0;
    let live = 0;
    for (const c of this.data.classes.values()) {
      live += c.liveSlots() * c.chunkSize;
      for (const s of c.segments.values()) allocated += this.io.statSync(s.path)?.allocated ?? 0;
    }
    let snapshots = 0;
    for (const v of this.volumes.values()) snapshots += v.snaps.length;
    return { allocatedBytes: allocated, liveBytes: live, volumes: this.volumes.size, snapshots, full: this.data.full, freeBytes: this.data.lastFreeBytes };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.closing = true;
    if (this.compactTimer) clearTimeout(this.compactTimer);
    this.compactTimer = null;
    await this.opChain;
    if (!this.opts.inspectOnly) await this.commit();
    await this.segDeletes;
    this.closed = true;
    await this.data.closeAll();
    await this.journal?.close().catch(() => undefined);
    await this.sbFile?.close().catch(() => undefined);
    const backs = new Set<IoFile>();
    for (const v of this.volumes.values()) if (v.backingFile) backs.add(v.backingFile);
    for (const f of backs) await f.close().catch(() => undefined);
  }

  /** Abandons the store without committing (tests: a simulated crash already killed its I/O). */
  abandon(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.closing = true;
    if (this.compactTimer) clearTimeout(this.compactTimer);
    this.compactTimer = null;
    this.closed = true;
    // Release descriptors without committing anything (what a kill would leave on disk).
    void this.data.closeAll();
    void this.journal?.close().catch(() => undefined);
    void this.sbFile?.close().catch(() => undefined);
    for (const v of this.volumes.values()) void v.backingFile?.close().catch(() => undefined);
  }

  /** Every node of every volume, for the checker. */
  allNodes(): NodeRec[] {
    return [...this.nodes.values()];
  }
}

/** One buffer holding `parts` back to back (a journal append or checkpoint is one write). */
function joinRecords(parts: Buffer[]): Buffer {
  let len = 0;
  for (const r of parts) len += r.length;
  const buf = Buffer.allocUnsafe(len);
  let at = 0;
  for (const r of parts) at += r.copy(buf, at);
  return buf;
}

/** Calls fn(i, j) for each run a[i..j) of consecutive numbers (runs never cross a multiple of `cut`). */
function forRuns(a: number[], fn: (i: number, j: number) => void, cut = Infinity): void {
  let i = 0;
  while (i < a.length) {
    let j = i + 1;
    while (j < a.length && a[j] === (a[j - 1] as number) + 1 && (a[j] as number) % cut !== 0) j++;
    fn(i, j);
    i = j;
  }
}

/** Exact chunk-granular diff of two maps of one volume (pages shared by both are skipped). */
export function diffMaps(a: NodeMap, b: NodeMap, cs: number, size: number, start: number, limit: number): DiffPage {
  const extents: ChangedExtent[] = [];
  if (a.l1 === b.l1) return { extents, next: null };
  const pa = a.l1.pages;
  const pb = b.l1.pages;
  let c = Math.floor(start / cs);
  const n = Math.ceil(size / cs);
  while (c < n) {
    const pi = c >>> PAGE_SHIFT;
    const x = pa[pi] ?? null;
    const y = pb[pi] ?? null;
    const pageEnd = Math.min(n, (pi + 1) * ENTRIES_PER_PAGE);
    if (x === y) {
      c = pageEnd;
      continue;
    }
    for (; c < pageEnd; c++) {
      const i = (c & (ENTRIES_PER_PAGE - 1)) * 2;
      const sx = x ? (x.e[i] as number) : UNMAPPED;
      const sy = y ? (y.e[i] as number) : UNMAPPED;
      if (sx === sy && (x ? x.e[i + 1] : 0) === (y ? y.e[i + 1] : 0)) continue;
      const off = c * cs;
      const len = Math.min(cs, size - off);
      const last = extents[extents.length - 1];
      if (last && last.offset + last.length === off) last.length += len;
      else {
        if (extents.length >= limit) return { extents, next: off };
        extents.push({ offset: off, length: len });
      }
    }
  }
  return { extents, next: null };
}

export class HeadDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = false;
  readonly preferredBlockSize: number;
  readonly multiConn = true;
  private readonly store: CowStore;
  private readonly vol: VolumeRec;
  constructor(store: CowStore, vol: VolumeRec) {
    this.store = store;
    this.vol = vol;
    this.size = vol.size;
    this.preferredBlockSize = vol.chunkSize;
  }
  read(offset: number, length: number, into: Buffer): Promise<void> {
    return this.store.readNode(this.vol.head, offset, length, into, 0);
  }
  write(offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
    return this.store.write(this.vol, offset, data, data.length, opts.fua);
  }
  trim(offset: number, length: number, opts: WriteOptions): Promise<void> {
    return this.store.discard(this.vol, offset, length, { fua: opts.fua, noHole: false, fast: false });
  }
  zero(offset: number, length: number, opts: ZeroOptions): Promise<void> {
    return this.store.discard(this.vol, offset, length, opts);
  }
  flush(): Promise<void> {
    return this.store.commit();
  }
  async cache(): Promise<void> {}
  extents(offset: number, length: number): Promise<Extent[]> {
    return this.store.extents(this.vol.head, offset, length);
  }
}

export class SnapshotDevice implements BlockDevice {
  readonly size: number;
  readonly readOnly = true;
  readonly preferredBlockSize: number;
  readonly multiConn = true;
  private readonly store: CowStore;
  private readonly node: NodeRec;
  constructor(store: CowStore, node: NodeRec) {
    this.store = store;
    this.node = node;
    this.size = node.vol.size;
    this.preferredBlockSize = node.vol.chunkSize;
  }
  read(offset: number, length: number, into: Buffer): Promise<void> {
    return this.store.readNode(this.node, offset, length, into, 0);
  }
  private ro(): Promise<void> {
    return Promise.reject(new StorageError('EROFS', `snapshot '${this.node.vol.name}@${this.node.name}' is read-only`));
  }
  write(): Promise<void> {
    return this.ro();
  }
  trim(): Promise<void> {
    return this.ro();
  }
  zero(): Promise<void> {
    return this.ro();
  }
  async flush(): Promise<void> {}
  async cache(): Promise<void> {}
  extents(offset: number, length: number): Promise<Extent[]> {
    if (this.node.deleted) return Promise.reject(new StorageError('EIO', 'snapshot was deleted'));
    return this.store.extents(this.node, offset, length);
  }
}

export { SEGMENT_BYTES_DEFAULT };
