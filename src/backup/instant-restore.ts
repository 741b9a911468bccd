// Instant restore: the new volume is served at once while its blocks arrive. This is the
// volume's fill source (src/storage/fill.ts): a read of a block not restored yet fetches that
// block first (checked against its name like every restored block), a write into one waits
// until the block is restored and that fact is durable (so a restart never fetches it again over
// the client's data), and run() restores the rest in the background. Progress lives in a bitmap
// persisted beside the store (state-files.ts): the store is flushed first, then the bitmap of
// blocks filled before that flush is written, so a set bit always means "in the store".
import { setTimeout as sleep } from 'node:timers/promises';
import { StorageError, type BlockDevice } from '../storage/device.ts';
import type { FillSource } from '../storage/fill.ts';
import { log } from '../util/log.ts';
import type { Progress } from './create.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import type { Manifest } from './manifest.ts';
import { runPool } from './pool.ts';
import type { Repository } from './repository.ts';
import { RESTORE_PARALLEL, type RestoreResult } from './restore.ts';
import { encodeRestoreProgress, RESTORE_FORMAT, restoreFile, removeStateFile, writeFileAtomic, type RestoreProgress } from './state-files.ts';

/** How often the background restore records its progress (a restart refetches at most this much). */
export const PROGRESS_PERSIST_MS = 1000;
/** Retry delays of the background restore while the target fails. */
export const RETRY_MIN_MS = 500;
export const RETRY_MAX_MS = 30_000;
/** While client requests wait for blocks, the background starts no more fetches than this at
 *  once: the requested blocks come first, and a busy client still cannot stop the restore. */
export const BACKGROUND_PARALLEL_WHILE_WAITED = 1;
/** At most one log line per this long about reads failing for an unreachable target. */
const READ_FAILURE_LOG_MS = 10_000;

export interface InstantRestoreOptions {
  dataDir: string;
  progress: RestoreProgress;
  /** The manifest when known (a fresh restore); else loaded by `load` (a resumed one). */
  manifest: Manifest | null;
  load: () => Promise<{ repo: Repository; manifest: Manifest }>;
  /** The head device that skips the fill hook (Store.attachFill). */
  device: BlockDevice;
  /** True once the volume this restore fills is gone (deleted, or another of the same name). */
  volumeGone: () => boolean;
}

export class InstantRestore implements FillSource {
  readonly volume: string;
  readonly target: string;
  readonly id: string;
  /** The creation time of the volume it fills (another volume of that name later is not it). */
  readonly volumeCreated: string;
  /** Why the background restore is stalled (it retries), or null. */
  stalled: string | null = null;
  private readonly o: InstantRestoreOptions;
  private readonly blockSize: number;
  private readonly nBlocks: number;
  private readonly done: Uint8Array;
  private durable: Uint8Array;
  private readonly inflight = new Map<number, Promise<void>>();
  /** Blocks that whole-block writes in progress replace without a fetch, and their end. */
  private readonly claims = new Map<number, { ended: Promise<void>; end: () => void }>();
  private loaded: { repo: Repository; manifest: Manifest } | null = null;
  private loading: Promise<{ repo: Repository; manifest: Manifest }> | null = null;
  private persistChain: Promise<void> = Promise.resolve();
  private persistQueued: Promise<void> | null = null;
  private dirty = false;
  private lastReadFailureLog = 0;
  private bytesDone = 0;
  private bytesTotal = 0;
  /** Client requests waiting for blocks, and the background's fills in progress (the priority). */
  private waited = 0;
  private background = 0;
  private readonly backgroundWakers: (() => void)[] = [];
  /** Blocks fetched since this restore (or its resumption) started, by reads or the background. */
  private fetched = 0;

  constructor(o: InstantRestoreOptions) {
    this.o = o;
    const p = o.progress;
    this.volume = p.volume;
    this.target = p.target;
    this.id = p.id;
    this.volumeCreated = p.volumeCreated;
    this.blockSize = p.blockSize;
    this.nBlocks = p.blocks;
    this.done = p.done.slice();
    this.durable = p.done.slice();
    if (o.manifest) this.adopt(o.manifest);
  }

  get file(): string {
    return restoreFile(this.o.dataDir, this.volume);
  }

  /** Percent of the data restored (by blocks until the manifest is known). */
  get percent(): number {
    if (this.loaded === null) {
      let n = 0;
      for (let i = 0; i < this.nBlocks; i++) if (this.isDone(this.done, i)) n++;
      return Math.floor((100 * n) / this.nBlocks);
    }
    return this.bytesTotal === 0 ? 100 : Math.floor((100 * this.bytesDone) / this.bytesTotal);
  }

  pending(offset: number, len: number, forWrite: boolean): boolean {
    const [first, last] = this.range(offset, len);
    const bits = forWrite ? this.durable : this.done;
    for (let i = first; i <= last; i++) if (!this.isDone(bits, i)) return true;
    return false;
  }

  async ensure(offset: number, len: number, forWrite: boolean): Promise<void> {
    const [first, last] = this.range(offset, len);
    const waits: Promise<void>[] = [];
    const mine: number[] = [];
    for (let i = first; i <= last; i++) {
      if (this.isDone(this.done, i)) continue;
      // A write replacing a whole block nobody is fetching or replacing needs none of its bytes:
      // it claims the block (a fetch waits for its end) and written() records it.
      if (forWrite && this.covers(i, offset, len) && !this.inflight.has(i) && !this.claims.has(i)) {
        this.claim(i);
        mine.push(i);
      } else waits.push(this.fill(i));
    }
    if (waits.length > 0) this.waited++;
    try {
      await Promise.all(waits);
      // Every block it replaces only in part must be recorded before the write starts.
      while (forWrite && this.unrecorded(first, last)) await this.persist();
    } catch (e) {
      for (const i of mine) this.unclaim(i);
      const msg = `volume '${this.volume}' is being restored from backup ${this.id} on target '${this.target}', ` +
        `and [${offset}, +${len}) is not restored yet: ${(e as Error).message}`;
      if (Date.now() - this.lastReadFailureLog >= READ_FAILURE_LOG_MS) {
        this.lastReadFailureLog = Date.now();
        log.warn(`instant restore: ${msg} (the background restore retries)`);
      }
      throw new StorageError('EIO', msg);
    } finally {
      if (waits.length > 0) {
        this.waited--;
        this.wakeBackground();
      }
    }
  }

  /** The end of a write ensure() let through: the blocks it claimed hold its data now, and are
   *  recorded before it is answered; if it failed, a fetch restores them again. (Every claim in
   *  its range is its own: another request on a claimed block waits in fill() for its end.) */
  async written(offset: number, len: number, ok: boolean): Promise<void> {
    const [first, last] = this.range(offset, len);
    let any = false;
    for (let i = first; i <= last; i++) {
      if (!this.claims.has(i)) continue;
      if (ok && !this.isDone(this.done, i)) {
        this.setDone(i);
        this.bytesDone += this.blockLen(i);
        this.dirty = true;
        any = true;
      }
      this.unclaim(i);
    }
    try {
      while (any && this.pending(offset, len, true)) await this.persist();
    } catch (e) {
      throw new StorageError('EIO', `volume '${this.volume}' is being restored, and the restore progress could not be recorded: ${(e as Error).message}`);
    }
  }

  private claim(i: number): void {
    let end!: () => void;
    const ended = new Promise<void>((r) => (end = r));
    this.claims.set(i, { ended, end });
  }

  private unclaim(i: number): void {
    this.claims.get(i)?.end();
    this.claims.delete(i);
  }

  /** True when a block of [first, last] that no write of this range claimed is not recorded yet. */
  private unrecorded(first: number, last: number): boolean {
    for (let i = first; i <= last; i++) if (!this.claims.has(i) && !this.isDone(this.durable, i)) return true;
    return false;
  }

  /** True when [offset, +len) holds the whole of block i. */
  private covers(i: number, offset: number, len: number): boolean {
    const start = i * this.blockSize;
    return offset <= start && offset + len >= start + this.blockLen(i);
  }

  /** Records the blocks filled so far, after making them durable in the store. Coalesced. */
  persist(): Promise<void> {
    if (this.persistQueued) return this.persistQueued;
    const p = this.persistChain.then(async () => {
      this.persistQueued = null;
      this.dirty = false;
      const snap = this.done.slice();
      await this.o.device.flush();
      await writeFileAtomic(this.file, encodeRestoreProgress({ ...this.o.progress, format: RESTORE_FORMAT, done: snap }));
      this.durable = snap;
    });
    this.persistQueued = p;
    this.persistChain = p.catch(() => undefined);
    return p;
  }

  /** Restores every block not restored yet, retrying while the target fails; resolves when all are durable. */
  async run(signal: AbortSignal, progress: (p: Progress) => void): Promise<RestoreResult> {
    const timer = setInterval(() => {
      if (this.dirty) this.persist().catch((e: unknown) => log.warn(`instant restore of '${this.volume}': cannot record progress`, e));
    }, PROGRESS_PERSIST_MS);
    try {
      let delay = RETRY_MIN_MS;
      for (;;) {
        try {
          await this.load();
          progress({ bytesDone: this.bytesDone, bytesTotal: this.bytesTotal });
          const todo: number[] = [];
          for (let i = 0; i < this.nBlocks; i++) if (!this.isDone(this.done, i)) todo.push(i);
          // A fetch may hang on the target: the job's end (cancel, shutdown) must not wait for it.
          const aborted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new BackupError(BackupErrorCode.Cancelled, 'cancelled')), { once: true }));
          aborted.catch(() => undefined);
          signal.addEventListener('abort', () => this.wakeBackground(), { once: true });
          // A block a client request is fetching is not the background's turn: awaited at the end.
          const joined: Promise<void>[] = [];
          await runPool(todo, RESTORE_PARALLEL, signal, async (i) => {
            const fetching = this.inflight.get(i);
            if (fetching) {
              joined.push(fetching);
              return;
            }
            while (this.waited > 0 && this.background >= BACKGROUND_PARALLEL_WHILE_WAITED && !signal.aborted) {
              await new Promise<void>((r) => this.backgroundWakers.push(r));
            }
            this.background++;
            try {
              await Promise.race([this.fill(i), aborted]);
            } finally {
              this.background--;
              this.wakeBackground();
            }
            progress({ bytesDone: this.bytesDone, bytesTotal: this.bytesTotal });
          });
          await Promise.race([Promise.all(joined), aborted]);
          await this.persist();
          this.stalled = null;
          break;
        } catch (e) {
          if (signal.aborted) throw e;
          if (this.o.volumeGone()) throw new BackupError(BackupErrorCode.Cancelled, `volume '${this.volume}' was deleted while it was being restored`);
          if (e instanceof BackupError && e.code === BackupErrorCode.BackupCorrupt) this.stalled = e.message;
          else this.stalled = (e as Error).message;
          log.warn(`instant restore of backup ${this.id} into '${this.volume}': ${this.stalled}; retrying in ${Math.round(delay / 1000)} s`);
          await sleep(delay, undefined, { signal }).catch(() => undefined);
          if (signal.aborted) throw e;
          delay = Math.min(delay * 2, RETRY_MAX_MS);
        }
      }
    } finally {
      clearInterval(timer);
    }
    const m = this.loaded!.manifest;
    const zero = m.blocks.filter((b) => b === null).length;
    return { id: this.id, volume: this.volume, bytesWritten: this.bytesTotal, blocksFetched: this.fetched, blocksZero: zero };
  }

  private wakeBackground(): void {
    for (const w of this.backgroundWakers.splice(0)) w();
  }

  /** Forgets the progress file (the restore is complete, or abandoned with its volume). */
  async removeFile(): Promise<void> {
    await removeStateFile(this.file);
  }

  private load(): Promise<{ repo: Repository; manifest: Manifest }> {
    if (this.loaded) return Promise.resolve(this.loaded);
    this.loading ??= this.o.load().then((l) => {
      if (l.manifest.blocks.length !== this.nBlocks || l.manifest.blockSize !== this.blockSize) {
        throw new BackupError(BackupErrorCode.BackupCorrupt, `backup ${this.id} has ${l.manifest.blocks.length} blocks of ${l.manifest.blockSize} bytes, the restore in progress expects ${this.nBlocks} of ${this.blockSize}`);
      }
      this.adopt(l.manifest);
      this.loaded = l;
      return l;
    }).finally(() => { this.loading = null; });
    return this.loading;
  }

  private adopt(m: Manifest): void {
    this.bytesTotal = 0;
    this.bytesDone = 0;
    m.blocks.forEach((b, i) => {
      if (b === null) this.setDone(i); // the new volume reads zeros there already
      else {
        this.bytesTotal += this.blockLen(i);
        if (this.isDone(this.done, i)) this.bytesDone += this.blockLen(i);
      }
    });
  }

  private fill(i: number): Promise<void> {
    let p = this.inflight.get(i);
    if (p) return p;
    p = (async () => {
      const { repo, manifest } = await this.load();
      // A whole-block write is replacing it: wait for its end (if it failed, fetch).
      for (let c = this.claims.get(i); c; c = this.claims.get(i)) await c.ended;
      if (this.isDone(this.done, i)) return;
      const name = manifest.blocks[i]!;
      const off = i * this.blockSize;
      const len = this.blockLen(i);
      const what = `block ${i} (offset ${off}) of backup ${this.id}`;
      const data = await repo.getBlock(name, what);
      if (data.length !== len) throw new BackupError(BackupErrorCode.BackupCorrupt, `${what}: object ${repo.blockKey(name)} holds ${data.length} bytes, expected ${len}`);
      await this.o.device.write(off, data, { fua: false });
      this.setDone(i);
      this.bytesDone += len;
      this.dirty = true;
      this.fetched++;
    })().finally(() => this.inflight.delete(i));
    p.catch(() => undefined); // each caller sees the failure; one nobody waits for any more is not an error
    this.inflight.set(i, p);
    return p;
  }

  private blockLen(i: number): number {
    return Math.min(this.blockSize, this.o.device.size - i * this.blockSize);
  }

  private range(offset: number, len: number): [number, number] {
    return [Math.floor(offset / this.blockSize), Math.floor((offset + Math.max(len, 1) - 1) / this.blockSize)];
  }

  private isDone(bits: Uint8Array, i: number): boolean {
    return ((bits[i >> 3]! >> (i & 7)) & 1) === 1;
  }

  private setDone(i: number): void {
    this.done[i >> 3] = (this.done[i >> 3] ?? 0) | (1 << (i & 7));
  }
}
