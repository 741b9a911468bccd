// The storage engine's entry points: open (or create) the store of a data dir, and check one.
import { CowStore, COMMIT_INTERVAL_DEFAULT_MS, JOURNAL_COMPACT_BYTES_DEFAULT, type LogFn } from './engine.ts';
import { SEGMENT_BYTES_DEFAULT } from './chunk-store.ts';
import { realFileIo, type FileIo } from './file-io.ts';
import type { Store } from './types.ts';

export { checkStore } from './check.ts';
export type { FileIo } from './file-io.ts';
export { CowStore } from './engine.ts';

export interface OpenStoreOptions {
  fileIo?: FileIo;
  commitIntervalMs?: number;
  log?: LogFn;
  /** Segment file size for a new store (tests use small ones). */
  segmentBytes?: number;
  /** Journal length that triggers a new checkpoint. */
  journalCompactBytes?: number;
  /** Told of each commit (with its duration) and compaction pass (with the bytes it moved). */
  observer?: StoreObserver;
}

export interface StoreObserver {
  commit(seconds: number): void;
  compactionPass(bytesMoved: number): void;
}

/**
 * Opens the store in `dataDir`, creating it when the directory is missing or holds no store.
 * A corrupt, foreign or newer-format store is refused with StoreError STORE_CORRUPT naming the file.
 */
export async function openStore(dataDir: string, opts: OpenStoreOptions = {}): Promise<Store> {
  return openCowStore(dataDir, opts);
}

/** The same, typed as the engine (tests and tools reach settle(), checkpoint(), compact()). */
export async function openCowStore(dataDir: string, opts: OpenStoreOptions = {}): Promise<CowStore> {
  return CowStore.open(dataDir.replace(/\/+$/, '') || '/', {
    fileIo: opts.fileIo ?? realFileIo,
    commitIntervalMs: opts.commitIntervalMs ?? COMMIT_INTERVAL_DEFAULT_MS,
    log: opts.log ?? (() => undefined),
    segmentBytes: opts.segmentBytes ?? SEGMENT_BYTES_DEFAULT,
    journalCompactBytes: opts.journalCompactBytes ?? JOURNAL_COMPACT_BYTES_DEFAULT,
    inspectOnly: false,
    ...(opts.observer ? { observer: opts.observer } : {}),
  });
}
