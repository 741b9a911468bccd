// One file for the encoder and its mirror decoder (longer than most), so the two change together.
// The snapshot stream (protocol/stream.md): what `snapnbd snapshot export` writes and `snapnbd
// volume import` reads. A pure codec, no I/O: the writer turns events into buffers, the decoder
// is a resumable push parser that turns any split of the bytes back into the same events, and
// returns errors as values. Integers are big-endian; every record carries a CRC-32 and the END
// record a SHA-256 of every byte before it, so a cut or a flipped byte is always found.
import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { CodedError } from '../util/coded-error.ts';

export const STREAM_MAGIC = 'SNAPSTRM';
export const STREAM_VERSION_MAJOR = 1;
export const STREAM_VERSION_MINOR = 0;
export const PREAMBLE_LEN = 16;
export const RECORD_HEADER_LEN = 12;
/** Largest record payload a reader accepts (anything longer is corrupt). */
export const STREAM_RECORD_MAX = 16 * 1024 * 1024;
/** Data bytes per DATA record this writer emits. */
export const DATA_RECORD_BYTES = 1024 * 1024;
export const GUID_LEN = 16;
export const SHA256_LEN = 32;
/** Longest name or description field, bytes (a u16 length). */
export const STRING_MAX = 0xffff;

export const StreamRec = {
  Begin: 1,
  Data: 2,
  Zero: 3,
  Hole: 4,
  End: 5,
  Abort: 6,
} as const;
export type StreamRec = (typeof StreamRec)[keyof typeof StreamRec];

/** A reader that does not know a record's type refuses the stream if this flag is set, else skips it. */
export const FLAG_CRITICAL = 0x0001;

const NO_BASE = '0'.repeat(GUID_LEN * 2);

export interface StreamHeader {
  volume: string;
  size: number;
  chunkSize: number;
  snapshot: string;
  /** 32 hex digits. */
  guid: string;
  createdMs: number;
  description: string;
  /** Incremental streams: the snapshot they apply on; null for a full stream. */
  base: { name: string; guid: string } | null;
}

export interface StreamTotals {
  /** Records before END, BEGIN included (skipped ones too). */
  records: number;
  dataBytes: number;
  zeroBytes: number;
}

export type StreamEvent =
  | { kind: 'begin'; header: StreamHeader }
  | { kind: 'data'; offset: number; data: Buffer }
  /** hole: unallocated in the source; both read as zeros. */
  | { kind: 'zero'; offset: number; length: number; hole: boolean }
  | { kind: 'skipped'; type: number; length: number }
  | { kind: 'end'; totals: StreamTotals };

export const StreamErrorCode = {
  Corrupt: 'STREAM_CORRUPT',
  Truncated: 'STREAM_TRUNCATED',
  Unsupported: 'STREAM_UNSUPPORTED',
  Aborted: 'STREAM_ABORTED',
} as const;
export type StreamErrorCode = (typeof StreamErrorCode)[keyof typeof StreamErrorCode];

export class StreamFormatError extends CodedError<StreamErrorCode> {
  override name = 'StreamFormatError';
}

// ------------------------------------------------------------------ encoding

function writeU64(b: Buffer, at: number, n: number): void {
  b.writeUInt32BE(Math.floor(n / 0x100000000), at);
  b.writeUInt32BE(n % 0x100000000, at + 4);
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 0x100000000 + b.readUInt32BE(at + 4);
}

export function encodePreamble(): Buffer {
  const b = Buffer.alloc(PREAMBLE_LEN);
  b.write(STREAM_MAGIC, 0, 'latin1');
  b.writeUInt16BE(STREAM_VERSION_MAJOR, 8);
  b.writeUInt16BE(STREAM_VERSION_MINOR, 10);
  b.writeUInt32BE(crc32(b.subarray(0, 12)), 12);
  return b;
}

/** One record as [header, payload] (the transport writes both; the payload is not copied). */
export function encodeRecord(type: number, flags: number, payload: Buffer): [Buffer, Buffer] {
  const h = Buffer.allocUnsafe(RECORD_HEADER_LEN);
  h.writeUInt16BE(type, 0);
  h.writeUInt16BE(flags, 2);
  h.writeUInt32BE(payload.length, 4);
  h.writeUInt32BE(crc32(payload, crc32(h.subarray(0, 8))), 8);
  return [h, payload];
}

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > STRING_MAX) throw new RangeError(`stream string field of ${b.length} bytes; at most ${STRING_MAX}`);
  const out = Buffer.allocUnsafe(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
}

export function encodeBeginPayload(h: StreamHeader): Buffer {
  const fixed = Buffer.alloc(8 + 4 + GUID_LEN + GUID_LEN + 8);
  writeU64(fixed, 0, h.size);
  fixed.writeUInt32BE(h.chunkSize, 8);
  fixed.write(h.guid, 12, 'hex');
  fixed.write(h.base?.guid ?? NO_BASE, 12 + GUID_LEN, 'hex');
  writeU64(fixed, 12 + 2 * GUID_LEN, h.createdMs);
  return Buffer.concat([fixed, str(h.volume), str(h.snapshot), str(h.base?.name ?? ''), str(h.description)]);
}

/**
 * Writes one stream: keeps the running SHA-256 and the totals, and checks that extents come in
 * order. Each method returns the buffers to send, in order.
 */
export class StreamWriter {
  private readonly hash: Hash = createHash('sha256');
  private readonly totals: StreamTotals = { records: 0, dataBytes: 0, zeroBytes: 0 };
  private size = 0;
  private pos = 0;
  private state: 'new' | 'open' | 'done' = 'new';

  begin(h: StreamHeader): Buffer[] {
    if (this.state !== 'new') throw new Error('stream already begun');
    this.state = 'open';
    this.size = h.size;
    const pre = encodePreamble();
    this.hash.update(pre);
    return [pre, ...this.record(StreamRec.Begin, encodeBeginPayload(h))];
  }

  data(offset: number, data: Buffer): Buffer[] {
    this.extent(offset, data.length);
    const head = Buffer.allocUnsafe(8);
    writeU64(head, 0, offset);
    this.totals.dataBytes += data.length;
    // The offset and the data are one payload; checksummed here without joining them.
    const len = 8 + data.length;
    const h = Buffer.allocUnsafe(RECORD_HEADER_LEN);
    h.writeUInt16BE(StreamRec.Data, 0);
    h.writeUInt16BE(FLAG_CRITICAL, 2);
    h.writeUInt32BE(len, 4);
    h.writeUInt32BE(crc32(data, crc32(head, crc32(h.subarray(0, 8)))), 8);
    this.hash.update(h).update(head).update(data);
    this.totals.records++;
    return [h, head, data];
  }

  zero(offset: number, length: number, hole: boolean): Buffer[] {
    this.extent(offset, length);
    const p = Buffer.allocUnsafe(16);
    writeU64(p, 0, offset);
    writeU64(p, 8, length);
    this.totals.zeroBytes += length;
    return this.record(hole ? StreamRec.Hole : StreamRec.Zero, p);
  }

  end(): Buffer[] {
    this.open();
    this.state = 'done';
    const p = Buffer.allocUnsafe(24 + SHA256_LEN);
    writeU64(p, 0, this.totals.records);
    writeU64(p, 8, this.totals.dataBytes);
    writeU64(p, 16, this.totals.zeroBytes);
    this.hash.digest().copy(p, 24);
    return encodeRecord(StreamRec.End, FLAG_CRITICAL, p);
  }

  /** The sender failed mid-way: readers refuse the stream and report `reason`. */
  abort(reason: string): Buffer[] {
    this.state = 'done';
    return encodeRecord(StreamRec.Abort, FLAG_CRITICAL, str(reason.slice(0, 4096)));
  }

  private open(): void {
    if (this.state !== 'open') throw new Error(this.state === 'new' ? 'stream not begun' : 'stream already ended');
  }

  private extent(offset: number, length: number): void {
    this.open();
    if (offset < this.pos || length <= 0 || offset + length > this.size) {
      throw new RangeError(`stream extent ${offset}+${length} out of order or outside 0..${this.size} (next free offset ${this.pos})`);
    }
    this.pos = offset + length;
  }

  private record(type: StreamRec, payload: Buffer): Buffer[] {
    const r = encodeRecord(type, FLAG_CRITICAL, payload);
    this.hash.update(r[0]).update(r[1]);
    this.totals.records++;
    return r;
  }
}

// ------------------------------------------------------------------ decoding

function corrupt(message: string): StreamFormatError {
  return new StreamFormatError(StreamErrorCode.Corrupt, message);
}

/** Reads fields of one payload; a field past its end is corruption. */
class Fields {
  private pos = 0;
  private readonly b: Buffer;
  private readonly what: string;
  constructor(b: Buffer, what: string) {
    this.b = b;
    this.what = what;
  }
  private need(n: number): void {
    if (this.pos + n > this.b.length) throw corrupt(`${this.what} record too short`);
  }
  u32(): number {
    this.need(4);
    this.pos += 4;
    return this.b.readUInt32BE(this.pos - 4);
  }
  u64(): number {
    this.need(8);
    const hi = this.b.readUInt32BE(this.pos);
    if (hi >= 0x200000) throw corrupt(`${this.what} record: a number beyond 2^53`);
    this.pos += 8;
    return readU64(this.b, this.pos - 8);
  }
  hex(n: number): string {
    this.need(n);
    this.pos += n;
    return this.b.toString('hex', this.pos - n, this.pos);
  }
  str(): string {
    this.need(2);
    const n = this.b.readUInt16BE(this.pos);
    this.pos += 2;
    this.need(n);
    this.pos += n;
    return this.b.toString('utf8', this.pos - n, this.pos);
  }
  rest(): Buffer {
    return this.b.subarray(this.pos);
  }
}

function decodeBegin(p: Buffer): StreamHeader {
  const f = new Fields(p, 'BEGIN');
  const size = f.u64();
  const chunkSize = f.u32();
  const guid = f.hex(GUID_LEN);
  const baseGuid = f.hex(GUID_LEN);
  const createdMs = f.u64();
  const volume = f.str();
  const snapshot = f.str();
  const baseName = f.str();
  const description = f.str();
  // Fields a later minor version appends are ignored.
  return { volume, size, chunkSize, snapshot, guid, createdMs, description, base: baseGuid === NO_BASE ? null : { name: baseName, guid: baseGuid } };
}

const D = { Preamble: 0, Header: 1, Payload: 2, Done: 3, Failed: 4 } as const;
type D = (typeof D)[keyof typeof D];

/**
 * Push parser. `push` returns the events completed by a chunk, or the first error (after which
 * the decoder stays failed); `end` says whether the input ended where a stream may end.
 */
export class StreamDecoder {
  private readonly hash: Hash = createHash('sha256');
  private readonly totals: StreamTotals = { records: 0, dataBytes: 0, zeroBytes: 0 };
  private chunks: Buffer[] = [];
  private avail = 0;
  private state: D = D.Preamble;
  private type = 0;
  private flags = 0;
  private length = 0;
  private header: Buffer = Buffer.alloc(0);
  private begun: StreamHeader | null = null;
  /** Next offset an extent may start at: extents are in order and do not overlap. */
  private pos = 0;
  private error: StreamFormatError | null = null;

  get done(): boolean {
    return this.state === D.Done;
  }

  push(chunk: Buffer): StreamEvent[] | StreamFormatError {
    if (this.error) return this.error;
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.avail += chunk.length;
    }
    const out: StreamEvent[] = [];
    try {
      for (;;) {
        if (this.state === D.Done) {
          if (this.avail > 0) throw corrupt(`${this.avail} bytes after the END record`);
          break;
        }
        if (this.state === D.Preamble) {
          if (this.avail < PREAMBLE_LEN) break;
          this.preamble(this.take(PREAMBLE_LEN));
        } else if (this.state === D.Header) {
          if (this.avail < RECORD_HEADER_LEN) break;
          const h = this.take(RECORD_HEADER_LEN);
          this.type = h.readUInt16BE(0);
          this.flags = h.readUInt16BE(2);
          this.length = h.readUInt32BE(4);
          if (this.length > STREAM_RECORD_MAX) throw corrupt(`record of ${this.length} bytes (at most ${STREAM_RECORD_MAX}): corrupt length`);
          this.header = Buffer.from(h);
          this.state = D.Payload;
        } else {
          if (this.avail < this.length) break;
          const payload = this.take(this.length);
          this.state = D.Header;
          const ev = this.record(payload);
          if (ev) out.push(ev);
        }
      }
    } catch (e) {
      if (!(e instanceof StreamFormatError)) throw e;
      this.error = e;
      this.state = D.Failed;
      return e;
    }
    return out;
  }

  /** Null when the stream ended complete; otherwise why not. */
  end(): StreamFormatError | null {
    if (this.error) return this.error;
    if (this.state === D.Done) return null;
    this.state = D.Failed;
    const where = this.begun === null ? 'before its header' : `after ${this.totals.records} records`;
    this.error = new StreamFormatError(StreamErrorCode.Truncated, `the stream was cut short ${where} (no END record)`);
    return this.error;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      // Spans chunks: copied once.
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.avail -= n;
    return out;
  }

  private preamble(b: Buffer): void {
    if (b.toString('latin1', 0, 8) !== STREAM_MAGIC) throw corrupt('not a snapnbd stream (bad magic)');
    if (b.readUInt32BE(12) !== crc32(b.subarray(0, 12))) throw corrupt('stream preamble checksum mismatch');
    const major = b.readUInt16BE(8);
    if (major !== STREAM_VERSION_MAJOR) {
      throw new StreamFormatError(StreamErrorCode.Unsupported, `stream format version ${major}.${b.readUInt16BE(10)}; this snapnbd reads version ${STREAM_VERSION_MAJOR}`);
    }
    this.hash.update(b);
    this.state = D.Header;
  }

  private record(payload: Buffer): StreamEvent | null {
    const h = this.header;
    if (h.readUInt32BE(8) !== crc32(payload, crc32(h.subarray(0, 8)))) {
      throw corrupt(`checksum mismatch in record ${this.totals.records + 1} (type ${this.type}, ${this.length} bytes)`);
    }
    if (this.type === StreamRec.End) return this.endRecord(payload);
    this.hash.update(h).update(payload);
    this.totals.records++;
    if (this.begun === null && this.type !== StreamRec.Begin) {
      if (this.type === StreamRec.Abort) this.abort(payload);
      throw corrupt(`the first record is type ${this.type}, not BEGIN`);
    }
    switch (this.type) {
      case StreamRec.Begin: {
        if (this.begun !== null) throw corrupt('a second BEGIN record');
        this.begun = decodeBegin(payload);
        return { kind: 'begin', header: this.begun };
      }
      case StreamRec.Data: {
        const f = new Fields(payload, 'DATA');
        const offset = f.u64();
        const data = f.rest();
        this.extent(offset, data.length, 'DATA');
        this.totals.dataBytes += data.length;
        return { kind: 'data', offset, data };
      }
      case StreamRec.Zero:
      case StreamRec.Hole: {
        const f = new Fields(payload, this.type === StreamRec.Zero ? 'ZERO' : 'HOLE');
        const offset = f.u64();
        const length = f.u64();
        this.extent(offset, length, this.type === StreamRec.Zero ? 'ZERO' : 'HOLE');
        this.totals.zeroBytes += length;
        return { kind: 'zero', offset, length, hole: this.type === StreamRec.Hole };
      }
      case StreamRec.Abort:
        return this.abort(payload);
      default:
        if (this.flags & FLAG_CRITICAL) {
          throw new StreamFormatError(StreamErrorCode.Unsupported, `record type ${this.type} is marked critical and this snapnbd does not know it (a newer stream format)`);
        }
        return { kind: 'skipped', type: this.type, length: payload.length };
    }
  }

  private abort(payload: Buffer): never {
    let reason = '';
    try {
      reason = new Fields(payload, 'ABORT').str();
    } catch {
      reason = '(no reason)';
    }
    throw new StreamFormatError(StreamErrorCode.Aborted, `the sender aborted the stream: ${reason}`);
  }

  private extent(offset: number, length: number, what: string): void {
    const size = this.begun!.size;
    if (length <= 0 || offset < this.pos || offset + length > size) {
      throw corrupt(`${what} record at ${offset}+${length}: empty, out of order or past the volume's end (${size})`);
    }
    this.pos = offset + length;
  }

  private endRecord(payload: Buffer): StreamEvent {
    if (this.begun === null) throw corrupt('END before BEGIN');
    const f = new Fields(payload, 'END');
    const records = f.u64();
    const dataBytes = f.u64();
    const zeroBytes = f.u64();
    const digest = f.hex(SHA256_LEN);
    if (digest !== this.hash.digest('hex')) throw corrupt('the stream\'s SHA-256 does not match its END record');
    const t = this.totals;
    if (records !== t.records || dataBytes !== t.dataBytes || zeroBytes !== t.zeroBytes) {
      throw corrupt(`END counts ${records} records/${dataBytes} data/${zeroBytes} zero bytes; read ${t.records}/${t.dataBytes}/${t.zeroBytes}`);
    }
    this.state = D.Done;
    return { kind: 'end', totals: { ...t } };
  }
}
