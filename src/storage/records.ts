// The persisted catalog records and their codec: what a Volume, a Node and each change to them
// look like in the journal (byte layouts in README.md "On-disk format"). Pure: no I/O, no catalog.
// Each encoder has its mirror decoder; catalog-records.ts applies decoded records to the catalog.
import { ENTRIES_PER_PAGE } from './block-map.ts';
import { Rec, RECORD_HEADER_LEN, RecordWriter, resealRecord, type RecordReader } from './format.ts';
import { GUID_BYTES } from './guid.ts';
import { BACKING_BASE } from './partial-slots.ts';

/** Fingerprint of a backing file taken at volume creation (backing.ts compares it at open). */
export interface BackingRecord {
  path: string;
  size: number;
  mtimeMs: number;
  /** crc32 over evenly spread samples (backing.ts, sampleChecksum). */
  sample: number;
}

export interface OriginRecord {
  volume: string;
  snapshot: string;
}

/** A volume as the journal holds it (`Volume 2`). */
export interface VolumeRecord {
  id: number;
  name: string;
  size: number;
  chunkSize: number;
  createdMs: number;
  backing: BackingRecord | null;
  /** The snapshot a clone was made from. */
  origin: OriginRecord | null;
}

export type NodeKind = 'head' | 'snap';

/** A head or snapshot as the journal holds it (`Node 4`, `NodeCp 11`). */
export interface NodeRecord {
  id: number;
  volumeId: number;
  kind: NodeKind;
  name: string;
  description: string;
  createdMs: number;
  /** Snapshots: the epoch they froze (entries born later are not in them). Heads: 0. */
  epoch: number;
  /** Snapshots: identity (guid.ts), a trailing optional field; '' for heads and when absent. */
  guid: string;
  /**
   * Bytes. A head's is its volume's; a snapshot keeps the size its volume had when it was taken
   * (a later resize changes only the head): a trailing optional u64 after the guid, absent in
   * records written before resize existed (then the volume's size at that point of the replay).
   */
  size: number;
}

const SIZE_BYTES = 8;
const NODE_HEAD = 0;
const NODE_SNAP = 1;

export function encodeState(epoch: number, nextId: number): Buffer {
  return new RecordWriter(Rec.State).u32(epoch).u32(nextId).finish();
}

export function decodeState(r: RecordReader): { epoch: number; nextId: number } {
  return { epoch: r.u32(), nextId: r.u32() };
}

export function encodeVolume(v: VolumeRecord): Buffer {
  const w = new RecordWriter(Rec.Volume).u32(v.id).str(v.name).u64(v.size).u32(v.chunkSize).f64(v.createdMs);
  if (v.backing) w.u8(1).str(v.backing.path).u64(v.backing.size).f64(v.backing.mtimeMs).u32(v.backing.sample);
  else w.u8(0);
  if (v.origin) w.u8(1).str(v.origin.volume).str(v.origin.snapshot);
  else w.u8(0);
  return w.finish();
}

export function decodeVolume(r: RecordReader): VolumeRecord {
  const id = r.u32();
  const name = r.str();
  const size = r.u64();
  const chunkSize = r.u32();
  const createdMs = r.f64();
  let backing: BackingRecord | null = null;
  if (r.u8()) backing = { path: r.str(), size: r.u64(), mtimeMs: r.f64(), sample: r.u32() };
  let origin: OriginRecord | null = null;
  if (r.u8()) origin = { volume: r.str(), snapshot: r.str() };
  return { id, name, size, chunkSize, createdMs, backing, origin };
}

/**
 * `source`: for `Node`, the node whose map the new one shares (0 = an empty map); for `NodeCp`
 * (checkpoint), the id of its L1 record.
 */
export function encodeNode(type: typeof Rec.Node | typeof Rec.NodeCp, n: NodeRecord, source: number): Buffer {
  const w = new RecordWriter(type).u32(n.id).u32(n.volumeId).u8(n.kind === 'head' ? NODE_HEAD : NODE_SNAP)
    .str(n.name).str(n.description).f64(n.createdMs).u32(n.epoch).u32(source);
  // Trailing and optional: readers that predate it ignore bytes after the fields they know.
  if (n.guid !== '') {
    w.bytes(Buffer.from(n.guid, 'hex'));
    if (n.kind === 'snap') w.u64(n.size);
  }
  return w.finish();
}

/** `size` is -1 when the record does not carry one (a head, or written before resize existed). */
export function decodeNode(r: RecordReader): { node: NodeRecord; source: number } {
  const id = r.u32();
  const volumeId = r.u32();
  const kind: NodeKind = r.u8() === NODE_HEAD ? 'head' : 'snap';
  const name = r.str();
  const description = r.str();
  const createdMs = r.f64();
  const epoch = r.u32();
  const source = r.u32();
  const guid = r.remaining >= GUID_BYTES ? r.bytes(GUID_BYTES).toString('hex') : '';
  const size = r.remaining >= SIZE_BYTES ? r.u64() : -1;
  return { node: { id, volumeId, kind, name, description, createdMs, epoch, guid, size }, source };
}

/** `VolumeDelete 3` and `NodeDelete 5` carry just the id. */
export function encodeDelete(type: typeof Rec.VolumeDelete | typeof Rec.NodeDelete, id: number): Buffer {
  return new RecordWriter(type).u32(id).finish();
}

/** `Resize 12`: the volume's (its head's) new size. */
export function encodeResize(volumeId: number, size: number): Buffer {
  return new RecordWriter(Rec.Resize).u32(volumeId).u64(size).finish();
}

export function decodeResize(r: RecordReader): { volumeId: number; size: number } {
  return { volumeId: r.u32(), size: r.u64() };
}

export function encodeRollback(headId: number, snapshotId: number): Buffer {
  return new RecordWriter(Rec.Rollback).u32(headId).u32(snapshotId).finish();
}

export function decodeRollback(r: RecordReader): { headId: number; snapshotId: number } {
  return { headId: r.u32(), snapshotId: r.u32() };
}

/** The entries of chunks first..first+n-1 of a node, read from its map. */
export function encodeMapRun(nodeId: number, first: number, n: number, map: { slot(c: number): number; birth(c: number): number }): Buffer {
  const w = new RecordWriter(Rec.MapRun, 16 + n * 8).u32(nodeId).u64(first).u32(n);
  for (let c = first; c < first + n; c++) w.u32(map.slot(c)).u32(map.birth(c));
  return w.finish();
}

/** `entries` = n × (slot, birth). */
export function decodeMapRun(r: RecordReader): { nodeId: number; first: number; n: number; entries: Uint32Array } {
  const nodeId = r.u32();
  const first = r.u64();
  const n = r.u32();
  return { nodeId, first, n, entries: r.u32s(n * 2) };
}

/** A checkpoint's map page: its id and the chunk size of the slots it names. */
/** `into`: a buffer to encode into when it fits (the record then lives in it). */
export function encodePage(id: number, chunkSize: number, entries: Uint32Array, into?: Buffer): Buffer {
  return new RecordWriter(Rec.Page, 8 + ENTRIES_PER_PAGE * 8, into).u32(id).u32(chunkSize).u32s(entries, 0, entries.length).finish();
}

/** `into`: the page's own entries to decode into (no copy in between). */
export function decodePage(r: RecordReader, into?: Uint32Array): { id: number; chunkSize: number; entries: Uint32Array } {
  return { id: r.u32(), chunkSize: r.u32(), entries: r.u32s(ENTRIES_PER_PAGE * 2, into) };
}

/** A checkpoint's L1: its id, its length, and (index, page id) pairs for the pages present. */
export function encodeL1(id: number, len: number, pairs: Uint32Array): Buffer {
  return new RecordWriter(Rec.L1, 12 + pairs.length * 4).u32(id).u32(len).u32(pairs.length / 2).u32s(pairs, 0, pairs.length).finish();
}

export function decodeL1(r: RecordReader): { id: number; len: number; pairs: Uint32Array } {
  const id = r.u32();
  const len = r.u32();
  const count = r.u32();
  return { id, len, pairs: r.u32s(count * 2) };
}

/**
 * `SlotValid 13`: slot of a class is partial over `base` with `bits`; base UNMAPPED = whole again;
 * base BACKING_BASE (partial-slots.ts) is followed by the chunk index `at` in the backing file.
 */
export function encodeSlotValid(chunkSize: number, slot: number, base: number, bits: Uint32Array | null, at = 0): Buffer {
  const words = bits ? bits.length : 0;
  const backed = base === BACKING_BASE;
  const w = new RecordWriter(Rec.SlotValid, 16 + words * 4 + (backed ? 4 : 0)).u32(chunkSize).u32(slot).u32(base).u32(words);
  if (bits) w.u32s(bits, 0, words);
  if (backed) w.u32(at);
  return w.finish();
}

/**
 * Gives a SlotValid record from `encodeSlotValid` (with bits) newer bits in place; false, and
 * nothing changed, when their length differs.
 */
export function patchSlotValidBits(rec: Buffer, bits: Uint32Array): boolean {
  const at = RECORD_HEADER_LEN + 16;
  if (rec.readUInt32LE(at - 4) !== bits.length) return false;
  for (let i = 0; i < bits.length; i++) rec.writeUInt32LE(bits[i] as number, at + i * 4);
  resealRecord(rec);
  return true;
}

export function decodeSlotValid(r: RecordReader): { chunkSize: number; slot: number; base: number; bits: Uint32Array; at: number } {
  const chunkSize = r.u32();
  const slot = r.u32();
  const base = r.u32();
  const bits = r.u32s(r.u32());
  return { chunkSize, slot, base, bits, at: base === BACKING_BASE ? r.u32() : 0 };
}
