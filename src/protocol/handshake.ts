// Handshake messages (spec "Newstyle negotiation", "Option types", "Option reply types").
// Pure: every encoder has its mirror decoder (tests and the raw test client use both sides).
import {
  CLIENT_FLAGS_LEN, EXPORT_NAME_REPLY_LEN, EXPORT_NAME_ZEROES, GREETING_LEN, IHAVEOPT, Info,
  MAX_META_QUERIES, MAX_STRING_LEN, NBDMAGIC, OPTION_HEADER_LEN, OPTION_REPLY_HEADER_LEN,
  OPTION_REPLY_MAGIC,
} from './constants.ts';
import { ProtocolError, malformed } from './errors.ts';

// ---- server -> client ----

export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(GREETING_LEN);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export function decodeGreeting(b: Buffer): { flags: number } | ProtocolError {
  if (b.length < GREETING_LEN) return malformed('greeting cut short');
  if (b.readBigUInt64BE(0) !== NBDMAGIC || b.readBigUInt64BE(8) !== IHAVEOPT) return new ProtocolError('NBD_ERR_BAD_MAGIC', 'not a newstyle greeting');
  return { flags: b.readUInt16BE(16) };
}

export function encodeOptionReply(opt: number, type: number, data: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_LEN + data.length);
  b.writeBigUInt64BE(OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(opt, 8);
  b.writeUInt32BE(type >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OPTION_REPLY_HEADER_LEN);
  return b;
}

export interface OptionReply { opt: number; type: number; data: Buffer }

/** Decodes one option reply at `at`. */
export function decodeOptionReply(b: Buffer, at = 0): { reply: OptionReply; next: number } | ProtocolError {
  if (b.length - at < OPTION_REPLY_HEADER_LEN) return malformed('option reply header cut short');
  if (b.readBigUInt64BE(at) !== OPTION_REPLY_MAGIC) return new ProtocolError('NBD_ERR_BAD_MAGIC', 'bad option reply magic');
  const len = b.readUInt32BE(at + 16);
  if (b.length - at < OPTION_REPLY_HEADER_LEN + len) return malformed('option reply data cut short');
  return {
    reply: { opt: b.readUInt32BE(at + 8), type: b.readUInt32BE(at + 12), data: b.subarray(at + 20, at + 20 + len) },
    next: at + OPTION_REPLY_HEADER_LEN + len,
  };
}

/** Answer to NBD_OPT_EXPORT_NAME: size, flags, then 124 zeroes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size: number, txFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(EXPORT_NAME_REPLY_LEN + (noZeroes ? 0 : EXPORT_NAME_ZEROES));
  b.writeBigUInt64BE(BigInt(size), 0);
  b.writeUInt16BE(txFlags, 8);
  return b;
}

export function decodeExportNameReply(b: Buffer): { size: number; flags: number } {
  return { size: Number(b.readBigUInt64BE(0)), flags: b.readUInt16BE(8) };
}

/** NBD_REP_SERVER payload: namelen(4) name description. */
export function encodeRepServer(name: string, description: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function decodeRepServer(b: Buffer): { name: string; description: string } {
  const len = b.readUInt32BE(0);
  return { name: b.toString('utf8', 4, 4 + len), description: b.toString('utf8', 4 + len) };
}

export type InfoReply =
  | { type: typeof Info.EXPORT; size: number; flags: number }
  | { type: typeof Info.NAME; name: string }
  | { type: typeof Info.DESCRIPTION; description: string }
  | { type: typeof Info.BLOCK_SIZE; minimum: number; preferred: number; maximum: number };

/** NBD_REP_INFO payload. */
export function encodeInfo(info: InfoReply): Buffer {
  switch (info.type) {
    case Info.EXPORT: {
      const b = Buffer.allocUnsafe(12);
      b.writeUInt16BE(Info.EXPORT, 0);
      b.writeBigUInt64BE(BigInt(info.size), 2);
      b.writeUInt16BE(info.flags, 10);
      return b;
    }
    case Info.NAME:
    case Info.DESCRIPTION: {
      const s = Buffer.from(info.type === Info.NAME ? info.name : info.description, 'utf8');
      const b = Buffer.allocUnsafe(2 + s.length);
      b.writeUInt16BE(info.type, 0);
      s.copy(b, 2);
      return b;
    }
    case Info.BLOCK_SIZE: {
      const b = Buffer.allocUnsafe(14);
      b.writeUInt16BE(Info.BLOCK_SIZE, 0);
      b.writeUInt32BE(info.minimum, 2);
      b.writeUInt32BE(info.preferred, 6);
      b.writeUInt32BE(info.maximum, 10);
      return b;
    }
  }
}

export function decodeInfo(b: Buffer): InfoReply | ProtocolError {
  if (b.length < 2) return malformed('info cut short');
  const type = b.readUInt16BE(0);
  switch (type) {
    case Info.EXPORT:
      return b.length === 12 ? { type, size: Number(b.readBigUInt64BE(2)), flags: b.readUInt16BE(10) } : malformed('NBD_INFO_EXPORT of the wrong size');
    case Info.NAME:
      return { type, name: b.toString('utf8', 2) };
    case Info.DESCRIPTION:
      return { type, description: b.toString('utf8', 2) };
    case Info.BLOCK_SIZE:
      return b.length === 14
        ? { type, minimum: b.readUInt32BE(2), preferred: b.readUInt32BE(6), maximum: b.readUInt32BE(10) }
        : malformed('NBD_INFO_BLOCK_SIZE of the wrong size');
    default:
      return malformed(`unknown info type ${type}`);
  }
}

/** NBD_REP_META_CONTEXT payload: id(4) name. */
export function encodeRepMetaContext(id: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(id, 0);
  n.copy(b, 4);
  return b;
}

export function decodeRepMetaContext(b: Buffer): { id: number; name: string } {
  return { id: b.readUInt32BE(0), name: b.toString('utf8', 4) };
}

// ---- client -> server ----

export function encodeClientFlags(flags: number): Buffer {
  const b = Buffer.allocUnsafe(CLIENT_FLAGS_LEN);
  b.writeUInt32BE(flags >>> 0, 0);
  return b;
}

export function encodeOption(opt: number, data: Buffer = EMPTY): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_LEN + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(opt, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OPTION_HEADER_LEN);
  return b;
}

export interface OptionHeader { opt: number; length: number }

/** The caller supplies OPTION_HEADER_LEN bytes at `at`. */
export function decodeOptionHeader(b: Buffer, at = 0): OptionHeader | ProtocolError {
  if (b.readBigUInt64BE(at) !== IHAVEOPT) return new ProtocolError('NBD_ERR_BAD_MAGIC', 'bad option magic');
  return {
    opt: b.readUInt32BE(at + 8),
    length: b.readUInt32BE(at + 12),
  };
}

/** NBD_OPT_INFO / NBD_OPT_GO payload: namelen(4) name nreq(2) infotype(2)*n. */
export function encodeInfoRequest(name: string, infos: number[]): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + 2 + 2 * infos.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + n.length + 2 * i));
  return b;
}

/** Malformed: the caller answers NBD_REP_ERR_INVALID. */
export function decodeInfoRequest(b: Buffer): { name: string; infos: number[] } | ProtocolError {
  if (b.length < 6) return malformed('info request cut short');
  const nameLen = b.readUInt32BE(0);
  if (nameLen > b.length - 6 || nameLen > MAX_STRING_LEN) return malformed('export name overruns the info request');
  const count = b.readUInt16BE(4 + nameLen);
  if (b.length !== 6 + nameLen + 2 * count) return malformed('info request length disagrees with its count');
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(b.readUInt16BE(6 + nameLen + 2 * i));
  return { name: b.toString('utf8', 4, 4 + nameLen), infos };
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT payload: namelen(4) name nq(4) (qlen(4) query)*. */
export function encodeMetaContextRequest(exportName: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const n = Buffer.from(exportName, 'utf8');
  const head = Buffer.allocUnsafe(4);
  head.writeUInt32BE(n.length, 0);
  parts.push(head, n);
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const l = Buffer.allocUnsafe(4);
    l.writeUInt32BE(qb.length, 0);
    parts.push(l, qb);
  }
  return Buffer.concat(parts);
}

/** Malformed: the caller answers NBD_REP_ERR_INVALID. */
export function decodeMetaContextRequest(b: Buffer): { exportName: string; queries: string[] } | ProtocolError {
  if (b.length < 8) return malformed('meta context request cut short');
  const nameLen = b.readUInt32BE(0);
  if (nameLen > b.length - 8 || nameLen > MAX_STRING_LEN) return malformed('export name overruns the meta context request');
  let at = 4 + nameLen;
  const count = b.readUInt32BE(at);
  at += 4;
  if (count > MAX_META_QUERIES) return malformed(`more than ${MAX_META_QUERIES} meta context queries`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (b.length - at < 4) return malformed('meta context query length cut short');
    const len = b.readUInt32BE(at);
    at += 4;
    if (len > b.length - at || len > MAX_STRING_LEN) return malformed('meta context query overruns the request');
    queries.push(b.toString('utf8', at, at + len));
    at += len;
  }
  if (at !== b.length) return malformed('bytes after the last meta context query');
  return { exportName: b.toString('utf8', 4, 4 + nameLen), queries };
}

const EMPTY = Buffer.alloc(0);
