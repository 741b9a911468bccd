// The engine's public API, as the volume registry and the control socket use it. The engine
// (src/storage/engine.ts and friends) implements `Store`; `openStore` in src/storage/index.ts
// opens one. One store per data dir holds every volume, its snapshots and its clones, so clones
// can share chunks with their origin.
import type { BlockDevice } from './device.ts';
import type { FillSource } from './fill.ts';
import { CodedError } from '../util/coded-error.ts';

/** Stable error codes, shared with the control socket's `error.data.code`. */
export const StoreErrorCode = {
  VolumeNotFound: 'VOLUME_NOT_FOUND',
  SnapshotNotFound: 'SNAPSHOT_NOT_FOUND',
  NameTaken: 'NAME_TAKEN',
  InvalidName: 'INVALID_NAME',
  InvalidArgument: 'INVALID_ARGUMENT',
  VolumeBusy: 'VOLUME_BUSY',
  /** Deleting a volume that has snapshots needs withSnapshots (they would go with it). */
  VolumeHasSnapshots: 'VOLUME_HAS_SNAPSHOTS',
  SnapshotBusy: 'SNAPSHOT_BUSY',
  /** A smaller size for a volume needs `shrink` (it discards the data past the new end). */
  ShrinkNotConfirmed: 'SHRINK_NOT_CONFIRMED',
  NoSpace: 'NO_SPACE',
  StoreCorrupt: 'STORE_CORRUPT',
  BackingChanged: 'BACKING_CHANGED',
  /** Another process (or this one) has the store open: a store belongs to one process at a time. */
  StoreLocked: 'STORE_LOCKED',
  Closed: 'STORE_CLOSED',
} as const;
export type StoreErrorCode = (typeof StoreErrorCode)[keyof typeof StoreErrorCode];

export class StoreError extends CodedError<StoreErrorCode> {
  override name = 'StoreError';
}

/**
 * The store is closed: STORE_CLOSED to a control caller, and ESHUTDOWN (`errno`, which
 * toNbdErrno reads) to an NBD client, whether its request is a read, a write or a FLUSH.
 */
export class StoreClosedError extends StoreError {
  readonly errno = 'ESHUTDOWN';
  constructor() {
    super(StoreErrorCode.Closed, 'store is closed');
  }
}

/** Volume sizes are whole sectors. */
export const SECTOR = 512;

export const NAME_MAX = 128;
/** Names: 1–NAME_MAX of [A-Za-z0-9._-], not starting with '.' or '-'; '@' is reserved. */
export const NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

export function isValidName(name: unknown): name is string {
  return typeof name === 'string' && NAME_PATTERN.test(name);
}

/** Throws INVALID_NAME unless `name` is a valid volume or snapshot name. */
export function checkName(kind: 'volume' | 'snapshot', name: string): void {
  if (!isValidName(name)) {
    throw new StoreError(StoreErrorCode.InvalidName,
      `invalid ${kind} name '${name}': 1-${NAME_MAX} characters of A-Z a-z 0-9 . _ -, not starting with '.' or '-'`);
  }
}

export const CHUNK_SIZE_MIN = 4096;
export const CHUNK_SIZE_MAX = 1024 * 1024;
export const CHUNK_SIZE_DEFAULT = 64 * 1024;

/** Throws INVALID_ARGUMENT unless `chunkSize` is a power of two in CHUNK_SIZE_MIN..CHUNK_SIZE_MAX. */
export function checkChunkSize(chunkSize: number): void {
  if (!Number.isInteger(chunkSize) || chunkSize < CHUNK_SIZE_MIN || chunkSize > CHUNK_SIZE_MAX || (chunkSize & (chunkSize - 1)) !== 0) {
    throw new StoreError(StoreErrorCode.InvalidArgument, `chunk size ${chunkSize} must be a power of two in ${CHUNK_SIZE_MIN}..${CHUNK_SIZE_MAX}`);
  }
}

/** Throws INVALID_ARGUMENT unless `size` is a positive whole number of sectors. */
export function checkVolumeSize(size: number | undefined): asserts size is number {
  if (size === undefined || !Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0) {
    throw new StoreError(StoreErrorCode.InvalidArgument, `volume size ${size} must be a positive multiple of ${SECTOR}`);
  }
}

export interface VolumeSpec {
  name: string;
  /** Bytes; a multiple of 512. Defaults to the backing file's size when a backing is given. */
  size?: number;
  /** Path of a raw image: opened read-only, never written. */
  backing?: string;
  /** Power of two, CHUNK_SIZE_MIN..CHUNK_SIZE_MAX. */
  chunkSize?: number;
}

/** ZFS-style space accounting, in bytes of data chunks. */
export interface Space {
  /** Bytes of chunks this node maps (shared or not). */
  referenced: number;
  /** Bytes of chunks only this node maps: what deleting it would free. */
  used: number;
  /** Bytes of chunks written since the previous snapshot (for the head: since the newest). */
  written: number;
}

export interface VolumeInfo {
  name: string;
  size: number;
  chunkSize: number;
  backing: string | null;
  /** The snapshot this volume was cloned from, if it is a clone (it need not exist any more). */
  origin: { volume: string; snapshot: string } | null;
  created: string; // ISO 8601 UTC
  snapshots: number;
  space: Space;
  /** Why the volume cannot be served (its backing file changed or is missing), or null. */
  unavailable: string | null;
}

export interface SnapshotInfo {
  volume: string;
  name: string;
  created: string; // ISO 8601 UTC
  description: string;
  size: number;
  space: Space;
  /** Volumes cloned from this snapshot. */
  clones: string[];
  /** False while its creation is not yet committed (a failed commit; the next one makes it so). */
  durable: boolean;
  /** Why it cannot be read (its volume's backing file changed or is missing), or null. */
  unavailable: string | null;
  /** Identity: 32 hex digits, random at creation (or a stream's, when imported), never reused. */
  guid: string;
}

export interface ChangedExtent {
  offset: number;
  length: number;
}

export interface DiffPage {
  extents: ChangedExtent[];
  /** Pass as `start` to get the next page; null when done. */
  next: number | null;
}

export interface StoreStats {
  /** Bytes the store's files occupy on disk (st_blocks * 512). */
  allocatedBytes: number;
  /** Bytes of live chunks. */
  liveBytes: number;
  volumes: number;
  snapshots: number;
  /** The last data write that needed room was refused: the file system is full (up to the metadata reserve). */
  full: boolean;
  /** Free bytes on the data dir's file system as last seen (0 until a write needed to look). */
  freeBytes: number;
}

export interface Store {
  readonly dataDir: string;

  listVolumes(): VolumeInfo[];
  volumeInfo(name: string): VolumeInfo;
  createVolume(spec: VolumeSpec): Promise<VolumeInfo>;
  /** Deletes the head and every snapshot of the volume; clones of it survive. (The registry asks first.) */
  deleteVolume(name: string): Promise<void>;

  /**
   * Records the volume's backing file as it is now, so a volume refused for a changed backing
   * file is served again (dangerous: its chunks were written over the old content). `accepted`
   * says what had changed, null when nothing had. INVALID_ARGUMENT without a backing file,
   * BACKING_CHANGED when the file is missing.
   */
  acceptBacking(name: string): Promise<{ info: VolumeInfo; accepted: string | null }>;

  /**
   * Sets the volume's size (a multiple of 512). Growing works while it is in use: a device
   * already handed out keeps its size, `head()` returns one of the new size. Snapshots keep
   * their size. A smaller size needs `shrink` (else SHRINK_NOT_CONFIRMED), is refused while a
   * snapshot is longer than it (VOLUME_HAS_SNAPSHOTS), and frees the chunks past the new end.
   * The registry refuses a shrink while clients hold the head.
   */
  resizeVolume(name: string, size: number, opts?: { shrink?: boolean }): Promise<VolumeInfo>;

  /** The writable head. The same object for every caller, so all connections share one cache. */
  head(volume: string): BlockDevice;
  /**
   * Installs (or, with null, removes) the volume's fill source (fill.ts) and returns a device on
   * its head whose writes skip the hook: the one the source fills through.
   */
  attachFill(volume: string, source: FillSource | null): BlockDevice;
  /**
   * A read-only view of a snapshot. `background`: a bulk copy's (a backup, an export stream), whose
   * reads always go to the thread pool and stay out of the client read rule (IoFile.read).
   */
  snapshotView(volume: string, snapshot: string, opts?: { background?: boolean }): BlockDevice;

  /**
   * Point in time: holds new writes to the volume, drains in-flight ones, shares the map,
   * commits durably, releases. Contains every write resolved before the call and none started
   * after it resolves.
   */
  createSnapshot(volume: string, name: string, description?: string, guid?: string): Promise<SnapshotInfo>;
  /**
   * The volume's snapshots, oldest first; with `only`, just those it names, found by name
   * (a sliced listing asks for one slice of names at a time, never for the whole list).
   */
  listSnapshots(volume: string, only?: ReadonlySet<string>): SnapshotInfo[];
  snapshotInfo(volume: string, name: string): SnapshotInfo;
  deleteSnapshot(volume: string, name: string): Promise<void>;
  /** The head becomes the snapshot's content again; other snapshots are kept. */
  rollback(volume: string, snapshot: string): Promise<void>;
  /** A new writable volume sharing the snapshot's chunks. */
  clone(volume: string, snapshot: string, newName: string): Promise<VolumeInfo>;
  /**
   * Byte ranges whose content may differ between `from` and `to` (a snapshot name, or null for
   * the head), in offset order, merged, chunk-granular, never missing a change.
   */
  diff(volume: string, from: string, to: string | null, page?: { start?: number; limit?: number }): Promise<DiffPage>;

  flush(): Promise<void>;
  stats(): StoreStats;
  /** The same, in slices that yield the event loop (a store with many files; absent: `stats()`). */
  statsSliced?(): Promise<StoreStats>;
  /** Flushes, commits and closes every file. */
  close(): Promise<void>;
}
