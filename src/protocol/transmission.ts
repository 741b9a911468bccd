// Transmission-phase messages (spec "Transmission phase", "Structured reply chunk message
// types"). Pure: header encoders return small buffers, payloads travel separately so the
// transport can cork header + data into one writev. Every encoder has a mirror decoder.
import {
  REQUEST_HEADER_LEN, REQUEST_MAGIC, ReplyType, SIMPLE_REPLY_LEN, SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_HEADER_LEN, STRUCTURED_REPLY_MAGIC,
} from './constants.ts';
import { ProtocolError, malformed } from './errors.ts';

export const COOKIE_LEN = 8;
const OFFSET_HI_LIMIT = 0x200000; // hi word of 2^53: larger offsets are not exact JS numbers
/**
 * What a request offset of 2^53 or more decodes to. Not exact, but beyond every export (sizes are
 * below 2^53), so range validation refuses the request with an errno and the framing (a WRITE's
 * payload) is kept: a client's large offset is a request error, not a reason to hang up.
 */
export const OFFSET_SATURATED = 2 ** 53;

export interface RequestHeader {
  flags: number;
  type: number;
  /** Opaque; copied into the reply, never parsed. A view into the input. */
  cookie: Buffer;
  offset: number;
  length: number;
}

/** The caller supplies REQUEST_HEADER_LEN bytes at `at`. */
export function decodeRequestHeader(b: Buffer, at = 0): RequestHeader | ProtocolError {
  if (b.readUInt32BE(at) !== REQUEST_MAGIC) return new ProtocolError('NBD_ERR_BAD_MAGIC', 'bad request magic');
  const hi = b.readUInt32BE(at + 16);
  return {
    flags: b.readUInt16BE(at + 4),
    type: b.readUInt16BE(at + 6),
    cookie: b.subarray(at + 8, at + 16),
    offset: hi >= OFFSET_HI_LIMIT ? OFFSET_SATURATED : hi * 2 ** 32 + b.readUInt32BE(at + 20),
    length: b.readUInt32BE(at + 24),
  };
}

export function encodeRequestHeader(h: RequestHeader): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_LEN);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  h.cookie.copy(b, 8, 0, COOKIE_LEN);
  b.writeUInt32BE(Math.floor(h.offset / 2 ** 32), 16);
  b.writeUInt32BE(h.offset % 2 ** 32, 20);
  b.writeUInt32BE(h.length, 24);
  return b;
}

export function encodeSimpleReply(errno: number, cookie: Buffer): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_LEN);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno, 4);
  cookie.copy(b, 8, 0, COOKIE_LEN);
  return b;
}

export interface SimpleReply { errno: number; cookie: Buffer }

export function decodeSimpleReply(b: Buffer, at = 0): SimpleReply | ProtocolError {
  if (b.readUInt32BE(at) !== SIMPLE_REPLY_MAGIC) return new ProtocolError('NBD_ERR_BAD_MAGIC', 'bad simple reply magic');
  return { errno: b.readUInt32BE(at + 4), cookie: b.subarray(at + 8, at + 16) };
}

export interface ChunkHeader { flags: number; type: number; cookie: Buffer; length: number }

export function encodeChunkHeader(flags: number, type: number, cookie: Buffer, length: number, extra = 0): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_LEN + extra);
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  cookie.copy(b, 8, 0, COOKIE_LEN);
  b.writeUInt32BE(length, 16);
  return b;
}

export function decodeChunkHeader(b: Buffer, at = 0): ChunkHeader | ProtocolError {
  if (b.readUInt32BE(at) !== STRUCTURED_REPLY_MAGIC) return new ProtocolError('NBD_ERR_BAD_MAGIC', 'bad structured reply magic');
  return { flags: b.readUInt16BE(at + 4), type: b.readUInt16BE(at + 6), cookie: b.subarray(at + 8, at + 16), length: b.readUInt32BE(at + 16) };
}

/** Chunk header + offset(8) of an OFFSET_DATA chunk; `dataLength` bytes of data follow. */
export function encodeOffsetDataHeader(flags: number, cookie: Buffer, offset: number, dataLength: number): Buffer {
  const b = encodeChunkHeader(flags, ReplyType.OFFSET_DATA, cookie, 8 + dataLength, 8);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_LEN);
  return b;
}

/** A whole OFFSET_HOLE chunk: offset(8) size(4). */
export function encodeOffsetHole(flags: number, cookie: Buffer, offset: number, size: number): Buffer {
  const b = encodeChunkHeader(flags, ReplyType.OFFSET_HOLE, cookie, 12, 12);
  b.writeBigUInt64BE(BigInt(offset), STRUCTURED_REPLY_HEADER_LEN);
  b.writeUInt32BE(size, STRUCTURED_REPLY_HEADER_LEN + 8);
  return b;
}

export interface StatusDescriptor { length: number; flags: number }

/** A whole BLOCK_STATUS chunk: context id(4) then (length(4) flags(4))*. */
export function encodeBlockStatus(flags: number, cookie: Buffer, contextId: number, descriptors: StatusDescriptor[]): Buffer {
  const payload = 4 + 8 * descriptors.length;
  const b = encodeChunkHeader(flags, ReplyType.BLOCK_STATUS, cookie, payload, payload);
  let at = STRUCTURED_REPLY_HEADER_LEN;
  b.writeUInt32BE(contextId, at);
  at += 4;
  for (const d of descriptors) {
    b.writeUInt32BE(d.length, at);
    b.writeUInt32BE(d.flags, at + 4);
    at += 8;
  }
  return b;
}

const MAX_ERROR_MESSAGE = 256; // spec: SHOULD be short

/** A whole ERROR (or ERROR_OFFSET, when `offset` is given) chunk: errno(4) msglen(2) msg [offset(8)]. */
export function encodeErrorChunk(flags: number, cookie: Buffer, errno: number, message: string, offset?: number): Buffer {
  let msg = Buffer.from(message, 'utf8');
  if (msg.length > MAX_ERROR_MESSAGE) msg = msg.subarray(0, MAX_ERROR_MESSAGE);
  const withOffset = offset !== undefined;
  const payload = 6 + msg.length + (withOffset ? 8 : 0);
  const b = encodeChunkHeader(flags, withOffset ? ReplyType.ERROR_OFFSET : ReplyType.ERROR, cookie, payload, payload);
  let at = STRUCTURED_REPLY_HEADER_LEN;
  b.writeUInt32BE(errno, at);
  b.writeUInt16BE(msg.length, at + 4);
  msg.copy(b, at + 6);
  at += 6 + msg.length;
  if (withOffset) b.writeBigUInt64BE(BigInt(offset), at);
  return b;
}

export type ChunkPayload =
  | { type: typeof ReplyType.NONE }
  | { type: typeof ReplyType.OFFSET_DATA; offset: number; data: Buffer }
  | { type: typeof ReplyType.OFFSET_HOLE; offset: number; size: number }
  | { type: typeof ReplyType.BLOCK_STATUS; contextId: number; descriptors: StatusDescriptor[] }
  | { type: typeof ReplyType.ERROR | typeof ReplyType.ERROR_OFFSET; errno: number; message: string; offset?: number };

function badChunk(type: number, p: Buffer): ProtocolError {
  return malformed(`reply chunk type ${type} with a payload of ${p.length} bytes`);
}

/** Mirror of the chunk encoders (for tests and the raw client). */
export function decodeChunkPayload(type: number, p: Buffer): ChunkPayload | ProtocolError {
  switch (type) {
    case ReplyType.NONE:
      return p.length === 0 ? { type } : badChunk(type, p);
    case ReplyType.OFFSET_DATA:
      return p.length >= 9 ? { type, offset: Number(p.readBigUInt64BE(0)), data: p.subarray(8) } : badChunk(type, p);
    case ReplyType.OFFSET_HOLE:
      return p.length === 12 ? { type, offset: Number(p.readBigUInt64BE(0)), size: p.readUInt32BE(8) } : badChunk(type, p);
    case ReplyType.BLOCK_STATUS: {
      if (p.length < 12 || (p.length - 4) % 8 !== 0) return badChunk(type, p);
      const descriptors: StatusDescriptor[] = [];
      for (let at = 4; at < p.length; at += 8) descriptors.push({ length: p.readUInt32BE(at), flags: p.readUInt32BE(at + 4) });
      return { type, contextId: p.readUInt32BE(0), descriptors };
    }
    case ReplyType.ERROR:
    case ReplyType.ERROR_OFFSET: {
      if (p.length < 6) return badChunk(type, p);
      const len = p.readUInt16BE(4);
      const message = p.toString('utf8', 6, 6 + len);
      if (type === ReplyType.ERROR) return p.length === 6 + len ? { type, errno: p.readUInt32BE(0), message } : badChunk(type, p);
      return p.length === 14 + len ? { type, errno: p.readUInt32BE(0), message, offset: Number(p.readBigUInt64BE(6 + len)) } : badChunk(type, p);
    }
    default:
      return badChunk(type, p);
  }
}
