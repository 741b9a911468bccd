// The storage engine's entry points: open (or create) the store of a data dir, and check one.
import { SEGMENT_BYTES_DEFAULT } from './chunk-store.ts';
import { CowStore, type StoreObserver } from './engine.ts';

export type { StoreObserver } from './engine.ts';
import { COMMIT_INTERVAL_DEFAULT_MS, JOURNAL_COMPACT_BYTES_DEFAULT } from './journal.ts';
import type { LogFn } from './recovery.ts';
import { realFileIo, type FileIo } from './file-io.ts';
import { lockStoreFor, type HolderDetails } from './store-lock.ts';
import type { Store } from './types.ts';

export { checkStore } from './check.ts';
export type { FileIo } from './file-io.ts';
export { CowStore } from './engine.ts';
export type { HolderDetails } from './store-lock.ts';

export interface OpenStoreOptions {
  fileIo?: FileIo;
  commitIntervalMs?: number;
  log?: LogFn;
  /** Segment file size for a new store (tests use small ones). */
  segmentBytes?: number;
  /** Journal length that triggers a new checkpoint. */
  journalCompactBytes?: number;
  /** Bytes per piece the journal is read and a checkpoint written in (tests use tiny ones). */
  pieceBytes?: number;
  /** Who holds the store, as a second opener's refusal names it (serve adds its sockets). */
  holder?: () => HolderDetails;
  /** Told of each commit (with its duration) and compaction pass (with the bytes it moved). */
  observer?: StoreObserver;
}

/**
 * Opens the store in `dataDir`, creating it when the directory is missing or holds no store.
 * A corrupt, foreign or newer-format store is refused with StoreError STORE_CORRUPT naming the file;
 * a store another process (or this one) has open, with STORE_LOCKED naming the holder. The lock
 * is held until close().
 */
export async function openStore(dataDir: string, opts: OpenStoreOptions = {}): Promise<Store> {
  return openCowStore(dataDir, opts);
}

/** The same, typed as the engine (tests and tools reach settle(), checkpoint(), compact()). */
export async function openCowStore(dataDir: string, opts: OpenStoreOptions = {}): Promise<CowStore> {
  const dir = dataDir.replace(/\/+$/, '') || '/';
  const fileIo = opts.fileIo ?? realFileIo;
  await fileIo.mkdirp(dir);
  const lock = await lockStoreFor(dir, fileIo, () => ({ ...opts.holder?.() }));
  let store: CowStore;
  try {
    store = await CowStore.open(dir, {
      fileIo,
      commitIntervalMs: opts.commitIntervalMs ?? COMMIT_INTERVAL_DEFAULT_MS,
      log: opts.log ?? (() => undefined),
      segmentBytes: opts.segmentBytes ?? SEGMENT_BYTES_DEFAULT,
      journalCompactBytes: opts.journalCompactBytes ?? JOURNAL_COMPACT_BYTES_DEFAULT,
      inspectOnly: false,
      ...(opts.pieceBytes ? { pieceBytes: opts.pieceBytes } : {}),
      ...(opts.observer ? { observer: opts.observer } : {}),
    });
  } catch (e) {
    await lock?.release();
    throw e;
  }
  if (lock) {
    // The lock outlives everything close() does (its final commit included), then goes.
    const close = store.close.bind(store);
    store.close = async () => {
      try {
        await close();
      } finally {
        await lock.release();
      }
    };
  }
  return store;
}
