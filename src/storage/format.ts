// On-disk formats of the metadata: the superblock file (two alternating checksummed copies) and
// the journal (a checkpoint followed by an append-only log of checksummed records). Pure encode/
// decode, no I/O. Byte layouts are documented in README.md; all integers little-endian.
import { crc32 } from 'node:zlib';
import { endianness } from 'node:os';

export const FORMAT_VERSION = 1;
export const SUPERBLOCK_FILE = 'snapnbd.sb';
/** Present while a store is being created: its files then hold nothing any client was told of. */
export const CREATING_FILE = 'snapnbd.creating';
export const SUPERBLOCK_MAGIC = 'SNAPNBD\0';
export const SUPERBLOCK_SLOT = 4096;
export const SUPERBLOCK_LEN = 64;
export const JOURNAL_MAGIC = 'SNAPJNL\0';
export const JOURNAL_HEADER_LEN = 32;
export const RECORD_HEADER_LEN = 9;
/** A record longer than this is corrupt (the biggest real one is a PAGE or a MAP run). */
export const RECORD_MAX = 64 * 1024 * 1024;

export function journalFile(gen: number): string {
  return `journal-${gen.toString().padStart(8, '0')}.log`;
}

/** Matches journalFile() names (any generation; group 1 is the generation). */
export const JOURNAL_FILE_RE = /^journal-(\d+)\.log$/;

/** Record types; payloads are encoded in records.ts and listed in README.md. 8 is retired (never written). */
export const Rec = {
  State: 1, // checkpoint: epoch, nextId
  Volume: 2, // volume created (or, in a checkpoint, existing)
  VolumeDelete: 3,
  Node: 4, // node created; source node id or 0 (empty map)
  NodeDelete: 5,
  MapRun: 6, // node, first chunk, n × (slot, birth)
  Rollback: 7, // head node := share(source node)
  Page: 9, // checkpoint: page id, chunk size, entries
  L1: 10, // checkpoint: l1 id, length, count, count × (index, page id)
  NodeCp: 11, // checkpoint: node with its L1 id
  Resize: 12, // volume id, new size (the head's map grows or is cut; snapshots keep theirs)
  SlotValid: 13, // chunk size, slot, base (UNMAPPED: whole again), valid-block bitmap (partial-slots.ts)
  Commit: 99,
} as const;
export type Rec = (typeof Rec)[keyof typeof Rec];

export interface Superblock {
  seq: number;
  journalGen: number;
  /** Bytes at the start of the journal file that form the checkpoint (header included). */
  checkpointLen: number;
  segmentBytes: number;
  version: number;
}

export function encodeSuperblock(sb: Superblock): Buffer {
  const b = Buffer.alloc(SUPERBLOCK_LEN);
  b.write(SUPERBLOCK_MAGIC, 0, 'latin1');
  b.writeUInt32LE(sb.version, 8);
  b.writeUInt32LE(SUPERBLOCK_LEN, 12);
  writeU64(b, 16, sb.seq);
  writeU64(b, 24, sb.journalGen);
  writeU64(b, 32, sb.checkpointLen);
  writeU64(b, 40, sb.segmentBytes);
  b.writeUInt32LE(crc32(b.subarray(0, SUPERBLOCK_LEN - 4)), SUPERBLOCK_LEN - 4);
  return b;
}

export type SuperblockResult = { ok: true; sb: Superblock } | { ok: false; why: 'empty' | 'foreign' | 'newer' | 'checksum'; version?: number };

export function decodeSuperblock(b: Buffer): SuperblockResult {
  if (b.length < SUPERBLOCK_LEN || b.subarray(0, SUPERBLOCK_LEN).every((x) => x === 0)) return { ok: false, why: 'empty' };
  if (b.toString('latin1', 0, 8) !== SUPERBLOCK_MAGIC) return { ok: false, why: 'foreign' };
  const version = b.readUInt32LE(8);
  if (b.readUInt32LE(SUPERBLOCK_LEN - 4) !== crc32(b.subarray(0, SUPERBLOCK_LEN - 4))) return { ok: false, why: 'checksum' };
  if (version > FORMAT_VERSION) return { ok: false, why: 'newer', version };
  return {
    ok: true,
    sb: { version, seq: readU64(b, 16), journalGen: readU64(b, 24), checkpointLen: readU64(b, 32), segmentBytes: readU64(b, 40) },
  };
}

export function encodeJournalHeader(gen: number): Buffer {
  const b = Buffer.alloc(JOURNAL_HEADER_LEN);
  b.write(JOURNAL_MAGIC, 0, 'latin1');
  b.writeUInt32LE(FORMAT_VERSION, 8);
  writeU64(b, 12, gen);
  b.writeUInt32LE(crc32(b.subarray(0, JOURNAL_HEADER_LEN - 4)), JOURNAL_HEADER_LEN - 4);
  return b;
}

export function decodeJournalHeader(b: Buffer): { gen: number } | string {
  if (b.length < JOURNAL_HEADER_LEN) return 'truncated header';
  if (b.toString('latin1', 0, 8) !== JOURNAL_MAGIC) return 'bad magic (not a snapnbd journal)';
  if (b.readUInt32LE(JOURNAL_HEADER_LEN - 4) !== crc32(b.subarray(0, JOURNAL_HEADER_LEN - 4))) return 'header checksum mismatch';
  if (b.readUInt32LE(8) > FORMAT_VERSION) return `newer format version ${b.readUInt32LE(8)}`;
  return { gen: readU64(b, 12) };
}

export function writeU64(b: Buffer, at: number, n: number): void {
  b.writeUInt32LE(n % 0x100000000, at);
  b.writeUInt32LE(Math.floor(n / 0x100000000), at + 4);
}

export function readU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 0x100000000;
}

/** Writes the crc of a record built by RecordWriter again, after its payload was patched in place. */
export function resealRecord(b: Buffer): void {
  b.writeUInt32LE(crc32(b.subarray(8)), 4);
}

/** The records are little-endian: on such a host a Uint32Array's bytes are the record's. */
const LITTLE_ENDIAN = endianness() === 'LE';

/** Builds one record: [u32 payload length][u32 crc32 of type+payload][u8 type][payload]. */
export class RecordWriter {
  private buf: Buffer;
  private pos = RECORD_HEADER_LEN;
  private readonly type: Rec;

  /** `into`: a buffer to build the record in when it fits (a checkpoint reuses one per page). */
  constructor(type: Rec, sizeHint = 64, into?: Buffer) {
    this.type = type;
    this.buf = into && into.length >= RECORD_HEADER_LEN + sizeHint ? into : Buffer.allocUnsafe(RECORD_HEADER_LEN + sizeHint);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const nb = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(nb, 0, 0, this.pos);
    this.buf = nb;
  }

  u8(v: number): this {
    this.room(1);
    this.buf.writeUInt8(v, this.pos);
    this.pos += 1;
    return this;
  }

  u32(v: number): this {
    this.room(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  u64(v: number): this {
    this.room(8);
    writeU64(this.buf, this.pos, v);
    this.pos += 8;
    return this;
  }

  f64(v: number): this {
    this.room(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
    return this;
  }

  str(s: string): this {
    const n = Buffer.byteLength(s);
    this.room(4 + n);
    this.buf.writeUInt32LE(n, this.pos);
    this.buf.write(s, this.pos + 4);
    this.pos += 4 + n;
    return this;
  }

  bytes(b: Buffer): this {
    this.room(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
    return this;
  }

  u32s(a: Uint32Array, from: number, to: number): this {
    const n = to - from;
    this.room(n * 4);
    if (LITTLE_ENDIAN) {
      // One copy: a checkpoint writes 64 M of these per TiB mapped (pages, and an L1 per node).
      this.buf.set(new Uint8Array(a.buffer, a.byteOffset + from * 4, n * 4), this.pos);
      this.pos += n * 4;
      return this;
    }
    for (let i = from; i < to; i++) {
      this.buf.writeUInt32LE(a[i] as number, this.pos);
      this.pos += 4;
    }
    return this;
  }

  finish(): Buffer {
    const b = this.buf.subarray(0, this.pos);
    b.writeUInt32LE(this.pos - RECORD_HEADER_LEN, 0);
    b.writeUInt8(this.type, 8);
    resealRecord(b);
    return b;
  }
}

export class RecordReader {
  readonly type: number;
  private readonly b: Buffer;
  private pos = 0;
  constructor(type: number, payload: Buffer) {
    this.type = type;
    this.b = payload;
  }
  private need(n: number): void {
    if (this.pos + n > this.b.length) throw new Error(`record type ${this.type} too short`);
  }
  /** Bytes left: a trailing optional field is present when there is room for it. */
  get remaining(): number {
    return this.b.length - this.pos;
  }
  u8(): number {
    this.need(1);
    return this.b.readUInt8(this.pos++);
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = readU64(this.b, this.pos);
    this.pos += 8;
    return v;
  }
  f64(): number {
    this.need(8);
    const v = this.b.readDoubleLE(this.pos);
    this.pos += 8;
    return v;
  }
  str(): string {
    const n = this.u32();
    this.need(n);
    const s = this.b.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  bytes(n: number): Buffer {
    this.need(n);
    const v = Buffer.from(this.b.subarray(this.pos, this.pos + n));
    this.pos += n;
    return v;
  }
  /** `into`: the array to fill (at least n long), else a new one. */
  u32s(n: number, into?: Uint32Array): Uint32Array {
    this.need(n * 4);
    const a = into ?? new Uint32Array(n);
    if (LITTLE_ENDIAN) new Uint8Array(a.buffer, a.byteOffset, n * 4).set(this.b.subarray(this.pos, this.pos + n * 4));
    else for (let i = 0; i < n; i++) a[i] = this.b.readUInt32LE(this.pos + i * 4);
    this.pos += n * 4;
    return a;
  }
}

/**
 * Splits `b[from..]` into records. Stops at the first short, oversized or checksum-failing
 * record (a torn tail); `end` is the offset just past the last intact record.
 */
export function* scanRecords(b: Buffer, from: number): Generator<{ at: number; end: number; rec: RecordReader }> {
  let at = from;
  while (at + RECORD_HEADER_LEN <= b.length) {
    const len = b.readUInt32LE(at);
    if (len > RECORD_MAX || at + RECORD_HEADER_LEN + len > b.length) return;
    const body = b.subarray(at + 8, at + RECORD_HEADER_LEN + len);
    if (crc32(body) !== b.readUInt32LE(at + 4)) return;
    const end = at + RECORD_HEADER_LEN + len;
    yield { at, end, rec: new RecordReader(b.readUInt8(at + 8), b.subarray(at + RECORD_HEADER_LEN, end)) };
    at = end;
  }
}

export function commitRecord(seq: number): Buffer {
  return new RecordWriter(Rec.Commit, 8).u64(seq).finish();
}
