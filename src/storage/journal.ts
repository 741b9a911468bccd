// The transaction manager: the records waiting for the next commit, the commit itself (data
// sync, journal append, sync), the checkpoint (a new journal generation, then the superblock
// flip), and the generations and sequence numbers that tie them together. It owns the journal
// and superblock files and every counter about them; recovery.ts hands it the state it found at
// open. README.md "Commit protocol" is the specification; durability can be reviewed here alone.
import type { CheckpointPlan } from './checkpoint.ts';
import { CommitPacer } from './commit-pacer.ts';
import type { DataStore } from './chunk-store.ts';
import { StorageError, UncommittedChangeError } from './device.ts';
import { CrashPoint, type FileIo, type IoFile } from './file-io.ts';
import { commitRecord, encodeJournalHeader, encodeSuperblock, FORMAT_VERSION, journalFile, SUPERBLOCK_SLOT } from './format.ts';
import { writeInPieces } from './record-pieces.ts';
import { StoreClosedError, StoreError } from './types.ts';

/**
 * The background commit's tick, for clients that never FLUSH (NBD promises nothing for unflushed
 * writes): bounds the work a crash can lose and the memory of pending records. Metadata commits
 * at the first tick with no new records, else after `COMMIT_DEFER_TICKS_MAX` ticks (commit-pacer.ts).
 * At 1 s and a commit every tick the data fdatasyncs halved write throughput (bench/README.md).
 */
export const COMMIT_INTERVAL_DEFAULT_MS = 5000;
/** Journal length beyond which a commit writes a new checkpoint (also at 2x the last checkpoint). */
export const JOURNAL_COMPACT_BYTES_DEFAULT = 32 * 1024 * 1024;

/** Where the journal stood when recovery finished (or zeros for a store being created). */
export interface JournalState {
  sbFile: IoFile;
  /** Null only while a new store has no first checkpoint yet. */
  journal: IoFile | null;
  sbSeq: number;
  journalGen: number;
  /** Bytes of the journal file that hold committed transactions. */
  journalEnd: number;
  checkpointLen: number;
  commitSeq: number;
}

export interface JournalOptions {
  io: FileIo;
  dataDir: string;
  /** The data side: dirty segments are synced first, pending frees travel with the commit. */
  chunks: DataStore;
  /** The whole catalog frozen at this instant, for a checkpoint (checkpoint.ts). */
  planCheckpoint: () => CheckpointPlan;
  journalCompactBytes: number;
  /** Bytes per piece a checkpoint is written in (record-pieces.ts RECORD_PIECE_BYTES). */
  pieceBytes: number;
  /**
   * Whether a dropped node's pages are still being let go (catalog.ts). A checkpoint waits for
   * the next commit then: the slots those pages alone hold are free in the records' state (the
   * delete record went first), and a partial one among them would be written as a SlotValid
   * record, which replay would bring back partial and in no map. A forced checkpoint comes from
   * a control operation, which never runs beside a snapshot delete's walk (`serial`).
   */
  releasesPending: () => boolean;
}

/** Something that becomes durable with the next successful commit (a new snapshot). */
export interface Durable {
  durable: boolean;
}

export class Journal {
  private readonly io: FileIo;
  private readonly dataDir: string;
  private readonly chunks: DataStore;
  private readonly plan: () => CheckpointPlan;
  private readonly compactBytes: number;
  private readonly releasesPending: () => boolean;
  private readonly pieceBytes: number;
  private readonly sbFile: IoFile;
  private journal: IoFile | null;
  private sbSeq: number;
  private gen: number;
  private end: number;
  private cpLen: number;
  private commitSeq: number;
  /** The journal generation the last checkpoint attempt used (failed attempts included). */
  private triedGen = 0;
  private pending: Buffer[] = [];
  /** Bytes in `pending`, and every record byte ever logged or rewritten (the pacer's sign of activity). */
  private pendingBytes = 0;
  private loggedBytes = 0;
  /** Counts the swaps of `pending`: a record logged in this batch is still unwritten (see `batch`). */
  private swaps = 0;
  private readonly swapHooks: (() => void)[] = [];
  private readonly pacer = new CommitPacer();
  private commitRunning: Promise<void> | null = null;
  private commitQueued: Promise<void> | null = null;
  private forceCheckpoint = false;
  /** Snapshots created since the last commit swap (durable once a commit after it succeeds). */
  private undurable = new Set<Durable>();
  private closed = false;
  private timer: NodeJS.Timeout | null = null;
  /** Called after a commit whose frees became durable (the compactor looks for sparse segments). */
  onFreed: (() => void) | null = null;
  /** Told each commit's duration in seconds (the metrics endpoint). */
  onCommitted: ((seconds: number) => void) | null = null;

  constructor(opts: JournalOptions, state: JournalState) {
    this.io = opts.io;
    this.dataDir = opts.dataDir;
    this.chunks = opts.chunks;
    this.plan = opts.planCheckpoint;
    this.compactBytes = opts.journalCompactBytes;
    this.releasesPending = opts.releasesPending;
    this.pieceBytes = opts.pieceBytes;
    this.sbFile = state.sbFile;
    this.journal = state.journal;
    this.sbSeq = state.sbSeq;
    this.gen = state.journalGen;
    this.end = state.journalEnd;
    this.cpLen = state.checkpointLen;
    this.commitSeq = state.commitSeq;
  }

  get journalGen(): number {
    return this.gen;
  }

  get journalEnd(): number {
    return this.end;
  }

  get checkpointLen(): number {
    return this.cpLen;
  }

  /**
   * The batch that records logged now join. While it is unchanged, a record logged in it has
   * not been swapped out, so its logger may still rewrite it in place (data-path.ts: a partial
   * slot's newest bits); a commit swaps it out, even one that fails and puts it back.
   */
  get batch(): number {
    return this.swaps;
  }

  /**
   * A record of the current batch was rewritten in place: activity for the pacer as if it were
   * logged again (writers still busy: the commit keeps waiting for a quiet tick).
   */
  rewrote(record: Buffer): void {
    this.loggedBytes += record.length;
  }

  /**
   * Runs `fn` at each commit's swap, just before the batch is taken: a logger that rewrites its
   * records in place (`batch`) writes their last state there once, not on every change.
   */
  onSwap(fn: () => void): void {
    this.swapHooks.push(fn);
  }

  /** Queues records for the next commit (a change already made in memory). */
  log(record: Buffer): void {
    this.pending.push(record);
    this.pendingBytes += record.length;
    this.loggedBytes += record.length;
  }

  /** `node.durable` turns true with the next successful commit (until then its snapshot reads `creating`). */
  trackDurable(node: Durable): void {
    node.durable = false;
    this.undurable.add(node);
  }

  /** The node was deleted before it became durable. */
  untrack(node: Durable): void {
    this.undurable.delete(node);
  }

  /** A new store: its first checkpoint and superblock (generation 1). */
  async create(): Promise<void> {
    const cp = this.plan();
    try {
      await this.writeCheckpoint(cp);
    } finally {
      cp.release();
    }
  }

  startPeriodicCommit(intervalMs: number, log: (msg: string) => void): void {
    if (intervalMs <= 0) return;
    this.timer = setInterval(() => {
      // Only metadata needs the background commit. Data overwritten in place references no new
      // metadata, so like any page-cache server we sync it when a client FLUSHes (or FUA), not
      // on a timer: the timer's fdatasyncs were the write-throughput limit (bench/README.md).
      // Metadata too waits while its writers keep going, within bounds (commit-pacer.ts).
      if (!this.pacer.due(this.hasPendingMetadata(), this.loggedBytes, this.pendingBytes)) return;
      this.commit().catch((e: unknown) => log(`periodic commit failed: ${(e as Error).message}`));
    }, intervalMs);
    this.timer.unref();
  }

  stopPeriodicCommit(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private hasPendingMetadata(): boolean {
    if (this.pending.length > 0) return true;
    for (const c of this.chunks.classes.values()) if (c.pendingFree.length > 0) return true;
    return false;
  }

  private hasPending(): boolean {
    return this.chunks.dirty.size > 0 || this.hasPendingMetadata();
  }

  /** Makes every write resolved before the call durable. Concurrent callers share commits. */
  commit(): Promise<void> {
    if (this.closed) return Promise.reject(new StoreClosedError());
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

  /** Writes a checkpoint at the next commit (tests and the compactor's switch use it). */
  async checkpoint(): Promise<void> {
    this.forceCheckpoint = true;
    await this.commit();
  }

  /**
   * The commit of a control operation that already changed the in-memory state. If it fails, the
   * change stays (its records wait for the next commit: undoing it could not be made atomic with
   * what writes did since), and the caller learns exactly that.
   */
  async commitChange(what: string): Promise<void> {
    try {
      await this.commit();
    } catch (e) {
      const errno = e instanceof StorageError ? e.errno : 'EIO';
      throw new UncommittedChangeError(errno, `${what}: ${(e as Error).message}; the change is applied but not yet durable: ` +
        'the next successful commit (a FLUSH, or the periodic commit) makes it durable', { cause: e });
    }
  }

  private startCommit(): Promise<void> {
    const p: Promise<void> = this.doCommit().finally(() => {
      if (this.commitRunning === p) this.commitRunning = null;
    });
    this.commitRunning = p;
    return p;
  }

  private async doCommit(): Promise<void> {
    const wantCp = this.forceCheckpoint || (this.end > Math.max(this.compactBytes, this.cpLen * 2) && !this.releasesPending());
    if (!wantCp && !this.hasPending()) return;
    const t0 = performance.now();
    const data = this.chunks;
    // The swap: everything below is one instant of the in-memory state.
    for (const fn of this.swapHooks) fn();
    const records = this.pending;
    const recordBytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    this.swaps++;
    const frees = data.takePendingFrees();
    const dirty = data.takeDirty();
    const cp = wantCp ? this.plan() : null;
    this.forceCheckpoint = false;
    const becomeDurable = this.undurable;
    this.undurable = new Set<Durable>();
    const oldEnd = this.end;
    try {
      this.io.point(CrashPoint.BeforeDataSync);
      // One fdatasync at a time: each holds a libuv pool thread for as long as the disk takes,
      // and a pool full of them starved every read and write behind them (500 ms stalls).
      for (const s of dirty.segments) if (s.file) await s.file.datasync();
      if (dirty.dir) await this.io.syncDir(this.dataDir);
      this.io.point(CrashPoint.AfterDataSync);
      if (cp) await this.writeCheckpoint(cp);
      else if (records.length > 0) await this.append(records);
    } catch (e) {
      this.pending = records.concat(this.pending);
      this.pendingBytes += recordBytes;
      data.restorePendingFrees(frees);
      data.restoreDirty(dirty);
      if (cp) this.forceCheckpoint = true;
      for (const n of becomeDurable) this.undurable.add(n);
      if (this.journal && this.end === oldEnd) await this.journal.truncate(oldEnd).catch(() => undefined);
      throw e instanceof StoreError || e instanceof StorageError ? e : new StorageError('EIO', `commit failed: ${(e as Error).message}`, { cause: e });
    } finally {
      cp?.release();
    }
    data.committedFrees(frees);
    for (const n of becomeDurable) n.durable = true;
    if (frees.length > 0) this.onFreed?.();
    this.onCommitted?.((performance.now() - t0) / 1000);
  }

  private async append(records: Buffer[]): Promise<void> {
    const seq = this.commitSeq + 1;
    // Not pushed onto `records`: a failed append hands them back to `pending` for the next try,
    // and a Commit record left among them would end that transaction early on replay.
    const buf = joinRecords([...records, commitRecord(seq)]);
    const len = buf.length;
    const j = this.journal!;
    // Two writes so that a crash test can cut the append in the middle.
    const half = Math.floor(len / 2);
    await j.write(buf, 0, half, this.end);
    this.io.point(CrashPoint.JournalAppendMid);
    await j.write(buf, half, len - half, this.end + half);
    this.io.point(CrashPoint.BeforeJournalSync);
    await j.datasync();
    this.io.point(CrashPoint.AfterJournalSync);
    this.end += len;
    this.commitSeq = seq;
  }

  /** Compaction of the metadata: a new journal generation starting with a full checkpoint. */
  private async writeCheckpoint(cp: CheckpointPlan): Promise<void> {
    // A new generation for every attempt: a failed one may have left its superblock durable,
    // naming its file, which a retry must then not truncate (stale files go at the next open).
    const gen = Math.max(this.gen, this.triedGen) + 1;
    this.triedGen = gen;
    const seq = this.commitSeq + 1;
    const path = `${this.dataDir}/${journalFile(gen)}`;
    const f = await this.io.open(path, 'create');
    let len: number;
    try {
      await f.truncate(0);
      // In pieces at increasing offsets, encoded as they go (checkpoint.ts): never one buffer.
      const parts = concatParts([encodeJournalHeader(gen)], cp.records(), [commitRecord(seq)]);
      const piece = Buffer.allocUnsafe(this.pieceBytes);
      len = await writeInPieces(parts, piece, 0, (b, n, pos) => f.write(b, 0, n, pos), () => this.io.point(CrashPoint.CheckpointPiece));
      this.io.point(CrashPoint.CheckpointWritten);
      await f.datasync();
      await this.io.syncDir(this.dataDir);
      const sb = encodeSuperblock({ version: FORMAT_VERSION, seq: this.sbSeq + 1, journalGen: gen, checkpointLen: len, segmentBytes: this.chunks.segmentBytes });
      const slot = (this.sbSeq + 1) % 2;
      await this.sbFile.write(sb, 0, sb.length, slot * SUPERBLOCK_SLOT);
      this.io.point(CrashPoint.SuperblockWritten);
      await this.sbFile.datasync();
      this.io.point(CrashPoint.AfterSuperblockSync);
    } catch (e) {
      await f.close().catch(() => undefined);
      throw e;
    }
    const old = this.journal;
    const oldGen = this.gen;
    this.journal = f;
    this.gen = gen;
    this.end = len;
    this.cpLen = len;
    this.sbSeq++;
    this.commitSeq = seq;
    if (old) {
      await old.close().catch(() => undefined);
      await this.io.unlink(`${this.dataDir}/${journalFile(oldGen)}`).catch(() => undefined);
    }
    // Failed attempts' files (disk full): `check` after a clean close would call them leaks.
    for (let g = oldGen + 1; g < gen; g++) await this.io.unlink(`${this.dataDir}/${journalFile(g)}`).catch(() => undefined);
  }

  /** No commit after this one; closes the files (`abandon`: without waiting, as a kill would). */
  async close(): Promise<void> {
    this.stopPeriodicCommit();
    this.closed = true;
    await this.journal?.close().catch(() => undefined);
    await this.sbFile.close().catch(() => undefined);
  }
}

function* concatParts(...lists: Iterable<Buffer>[]): Generator<Buffer> {
  for (const l of lists) yield* l;
}

/** One buffer holding `parts` back to back (a journal append is one write). */
function joinRecords(parts: Buffer[]): Buffer {
  let len = 0;
  for (const r of parts) len += r.length;
  const buf = Buffer.allocUnsafe(len);
  let at = 0;
  for (const r of parts) at += r.copy(buf, at);
  return buf;
}
