// Gives space back to the file system at run time: a segment whose last slot became free is
// closed and unlinked; one that lost its tail slots is truncated after its last in-use slot.
// The chunk store (chunk-store.ts) calls these when slots are released; the work runs one file
// at a time in the background. No slot of a segment being deleted is allocated meanwhile, nor
// any slot past the cut of one being truncated (ChunkClass.cutting); a write that finds the disk
// full waits for this work before it gives up (DataStore.reclaimPending).
import type { ChunkClass, DataStore } from './chunk-store.ts';
import { segmentFile } from './chunk-store.ts';
import { CrashPoint, type FileIo } from './file-io.ts';

export class SegmentReclaimer {
  private readonly io: FileIo;
  private readonly dataDir: string;
  private readonly chunks: DataStore;
  private readonly warn: (msg: string) => void;
  /** The chain of deletions and truncations, one at a time. */
  private queue: Promise<void> = Promise.resolve();
  /** Tasks queued and not finished. */
  private running = 0;
  /** Truncations queued and not started (class/segment): one each. */
  private readonly trims = new Set<string>();

  constructor(io: FileIo, dataDir: string, chunks: DataStore, warn: (msg: string) => void) {
    this.io = io;
    this.dataDir = dataDir;
    this.chunks = chunks;
    this.warn = warn;
  }

  /** Resolves when every queued deletion and truncation has finished. */
  settle(): Promise<void> {
    return this.queue;
  }

  /** The queue while it holds work (space about to be given back), else null. */
  pending(): Promise<void> | null {
    return this.running > 0 ? this.queue : null;
  }

  /** Unlinks a segment whose slots are all free (unless one was allocated again meanwhile). */
  deleteSegment(cls: ChunkClass, seg: number): void {
    cls.deleting.add(seg);
    this.enqueue(async () => {
      try {
        if ((cls.segUse[seg] ?? 0) !== 0) return;
        cls.deleting.add(seg);
        const s = cls.segments.get(seg);
        cls.segments.delete(seg);
        if (s) {
          this.chunks.dirty.delete(s);
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
        this.warn(`could not delete segment ${seg}: ${(e as Error).message}`);
      } finally {
        cls.deleting.delete(seg);
        if ((cls.segUse[seg] ?? 0) === 0) cls.evacuating.delete(seg); // compacted: its slots are free again
        cls.resetHint(seg);
      }
    });
  }

  /**
   * Truncates a segment file after its last in-use slot (freed tails go back to the file system).
   * Its slots stay allocatable until the cut starts, and those below the cut during it, so a
   * write after a freeing commit finds the freed holes instead of growing another file.
   */
  trimSegment(cls: ChunkClass, seg: number): void {
    if (cls.deleting.has(seg)) return;
    const key = `${cls.log2}/${seg}`;
    if (this.trims.has(key)) return;
    this.trims.add(key);
    this.enqueue(async () => {
      this.trims.delete(key);
      if (cls.deleting.has(seg)) return; // emptied meanwhile: being deleted
      const end = cls.usedEnd(seg);
      if (end === 0) return;
      cls.cutting.set(seg, seg * cls.slotsPerSeg + end / cls.chunkSize);
      try {
        const s = cls.segments.get(seg);
        const f = s?.file ?? (s?.opening ? await s.opening.catch(() => null) : null);
        if (!f) return;
        if ((await f.size()) > end) await f.truncate(end);
        if (s) s.knownSize = end;
      } catch (e) {
        this.warn(`could not truncate segment ${seg}: ${(e as Error).message}`);
      } finally {
        cls.cutting.delete(seg);
        cls.resetHint(seg); // allocations during the cut passed over its tail
        if (cls.segUse[seg] === 0 && !cls.deleting.has(seg)) this.deleteSegment(cls, seg);
      }
    });
  }

  /** Runs `task` after the queued ones; `pending()` covers it until it has finished. */
  private enqueue(task: () => Promise<void>): void {
    this.running++;
    this.queue = this.queue.then(task).finally(() => {
      this.running--;
    });
  }
}
