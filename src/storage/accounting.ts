// What the Store API reports about volumes, snapshots and the store: ZFS-style space per node
// (referenced, used, written; README.md "Diff and accounting") from the counters of space.ts, the info records, and the
// store's allocated and live bytes. Reads the catalog and the chunk store; changes nothing.
import { isSlot } from './block-map.ts';
import type { Catalog, Node, Volume } from './catalog.ts';
import type { DataStore } from './chunk-store.ts';
import type { FileIo } from './file-io.ts';
import { journalFile, SUPERBLOCK_FILE } from './format.ts';
import type { SnapshotInfo, Space, StoreStats, VolumeInfo } from './types.ts';
import { Slicer } from '../util/slice.ts';

/** ISO 8601 UTC to the second. */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

/** The epoch "written" counts from: the previous snapshot's of the same volume (0: none). */
function prevEpochOf(node: Node, index?: number): number {
  const snaps = node.vol.snaps;
  const i = node.kind === 'head' ? snaps.length : (index ?? snaps.indexOf(node));
  return i > 0 ? (snaps[i - 1] as Node).epoch : 0;
}

/** A node's space from its counters (space.ts): O(distinct birth epochs), no map walk. */
export function spaceOf(node: Node, index?: number): Space {
  const chunkSize = node.vol.chunkSize;
  const sp = node.space;
  return { referenced: sp.slots * chunkSize, used: sp.unique * chunkSize, written: sp.bornAfter(prevEpochOf(node, index)) * chunkSize };
}

/**
 * The same figures by walking the node's map (what the counters must equal: `check` and the
 * model test compare): `referenced` = mapped slots, `used` = slots held only by this node (L1,
 * page and slot counts all 1), `written` = births after the previous snapshot.
 */
export function walkSpace(node: Node): Space {
  const chunkSize = node.vol.chunkSize;
  const cls = node.vol.chunkClass;
  const l1Alone = node.map.l1.refs === 1;
  const prevEpoch = prevEpochOf(node);
  let referenced = 0;
  let used = 0;
  let written = 0;
  node.map.forEachMapped((_c, s, birth, page) => {
    if (!isSlot(s)) return;
    referenced += chunkSize;
    if (l1Alone && page.refs === 1 && cls.holders(s) === 1) used += chunkSize;
    if (birth > prevEpoch) written += chunkSize;
  });
  return { referenced, used, written };
}

export function volumeInfo(v: Volume): VolumeInfo {
  return {
    name: v.name, size: v.size, chunkSize: v.chunkSize, backing: v.backing ? v.backing.path : null,
    origin: v.origin ? { ...v.origin } : null, created: isoTime(v.createdMs), snapshots: v.snaps.length,
    space: spaceOf(v.head), unavailable: v.backingError?.message ?? null,
  };
}

/** `index`: the snapshot's position in its volume's list, when the caller knows it (a listing). */
export function snapshotInfo(catalog: Catalog, s: Node, index?: number): SnapshotInfo {
  return {
    volume: s.vol.name, name: s.name, created: isoTime(s.createdMs), description: s.description, size: s.size,
    space: spaceOf(s, index), clones: catalog.clonesOf(s), durable: s.durable, unavailable: s.vol.backingError?.message ?? null, guid: s.guid,
  };
}

export function storeStats(io: FileIo, dataDir: string, journalGen: number, chunks: DataStore, catalog: Catalog): StoreStats {
  let allocated = 0;
  for (const path of storeFiles(dataDir, journalGen, chunks)) allocated += io.statSync(path)?.allocated ?? 0;
  let live = 0;
  for (const c of chunks.classes.values()) live += c.liveSlots() * c.chunkSize;
  return withCounts(allocated, live, chunks, catalog);
}

/** Slots counted between two looks at the clock (a fully written TiB has 16 M of them). */
const SLOTS_PER_CLOCK_LOOK = 65536;

/**
 * `storeStats` in slices that yield the event loop (util/slice.ts): one stat per segment file
 * (16 384 files for a fully written TiB, ~4 µs each) and one look per slot are too long for one
 * turn. The figures are then each as of its own slice (a write meanwhile may or may not be in).
 */
export async function storeStatsSliced(io: FileIo, dataDir: string, journalGen: number, chunks: DataStore, catalog: Catalog,
  slicer: Slicer = new Slicer()): Promise<StoreStats> {
  let allocated = 0;
  for (const path of storeFiles(dataDir, journalGen, chunks)) {
    if (slicer.due()) await slicer.yield();
    allocated += io.statSync(path)?.allocated ?? 0;
  }
  let live = 0;
  for (const c of chunks.classes.values()) {
    for (let at = 0; at < c.refs.length; at += SLOTS_PER_CLOCK_LOOK) {
      if (slicer.due()) await slicer.yield();
      // The table's length is read afresh: it may have grown meanwhile.
      live += c.liveSlots(at, Math.min(c.refs.length, at + SLOTS_PER_CLOCK_LOOK)) * c.chunkSize;
    }
  }
  return withCounts(allocated, live, chunks, catalog);
}

/** The files whose allocated bytes are the store's: superblock, journal, every segment. */
function* storeFiles(dataDir: string, journalGen: number, chunks: DataStore): Generator<string> {
  yield `${dataDir}/${SUPERBLOCK_FILE}`;
  yield `${dataDir}/${journalFile(journalGen)}`;
  for (const c of chunks.classes.values()) for (const s of c.segments.values()) yield s.path;
}

function withCounts(allocated: number, live: number, chunks: DataStore, catalog: Catalog): StoreStats {
  let snapshots = 0;
  for (const v of catalog.volumes()) snapshots += v.snaps.length;
  return { allocatedBytes: allocated, liveBytes: live, volumes: catalog.volumeCount, snapshots, full: chunks.full, freeBytes: chunks.lastFreeBytes };
}
