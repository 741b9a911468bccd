// A tiny NBD client over a raw socket, for hostile-client tests: every message is built by hand
// from the constants in /work/shared/reference/nbd-notes.md (never from our codec, so a codec bug
// cannot hide itself), and the test decides exactly which bytes go on the wire.
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';

export const NBD = {
  NBDMAGIC: 0x4e42444d41474943n,
  IHAVEOPT: 0x49484156454f5054n,
  OPT_REPLY_MAGIC: 0x0003e889045565a9n,
  REQUEST_MAGIC: 0x25609513,
  SIMPLE_REPLY_MAGIC: 0x67446698,
  STRUCTURED_REPLY_MAGIC: 0x668e33ef,
  FLAG_FIXED_NEWSTYLE: 1,
  FLAG_NO_ZEROES: 2,
  OPT_EXPORT_NAME: 1,
  OPT_ABORT: 2,
  OPT_LIST: 3,
  OPT_STARTTLS: 5,
  OPT_INFO: 6,
  OPT_GO: 7,
  OPT_STRUCTURED_REPLY: 8,
  OPT_LIST_META_CONTEXT: 9,
  OPT_SET_META_CONTEXT: 10,
  REP_ACK: 1,
  REP_SERVER: 2,
  REP_INFO: 3,
  REP_META_CONTEXT: 4,
  REP_ERR_UNSUP: 0x80000001,
  REP_ERR_POLICY: 0x80000002,
  REP_ERR_INVALID: 0x80000003,
  REP_ERR_UNKNOWN: 0x80000006,
  REP_ERR_TOO_BIG: 0x80000009,
  INFO_EXPORT: 0,
  CMD_READ: 0,
  CMD_WRITE: 1,
  CMD_DISC: 2,
  CMD_FLUSH: 3,
  CMD_TRIM: 4,
  CMD_CACHE: 5,
  CMD_WRITE_ZEROES: 6,
  CMD_BLOCK_STATUS: 7,
  CMD_FLAG_FUA: 1,
  CMD_FLAG_NO_HOLE: 2,
  CMD_FLAG_DF: 4,
  CMD_FLAG_REQ_ONE: 8,
  CMD_FLAG_FAST_ZERO: 16,
  EPERM: 1,
  EIO: 5,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
  REPLY_FLAG_DONE: 1,
  REPLY_TYPE_NONE: 0,
  REPLY_TYPE_OFFSET_DATA: 1,
  REPLY_TYPE_OFFSET_HOLE: 2,
  REPLY_TYPE_ERROR: 0x8001,
  REPLY_TYPE_ERROR_OFFSET: 0x8002,
} as const;

/** Long enough for a busy 2-core machine; a read that waits longer means the server went silent. */
export const RAW_READ_TIMEOUT_MS = 30_000;

export class PeerClosedError extends Error {
  readonly code = 'PEER_CLOSED';
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function u64(n: bigint | number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/** IHAVEOPT opt len data; `declaredLength` lets a test lie about the length. */
export function optionBytes(opt: number, data: Buffer = Buffer.alloc(0), declaredLength = data.length): Buffer {
  return Buffer.concat([u64(NBD.IHAVEOPT), u32(opt), u32(declaredLength), data]);
}

/** NBD_OPT_GO / NBD_OPT_INFO data: namelen name nreq infotypes. */
export function goData(name: string, infoRequests: number[] = []): Buffer {
  const n = Buffer.from(name, 'utf8');
  return Buffer.concat([u32(n.length), n, u16(infoRequests.length), ...infoRequests.map(u16)]);
}

export interface RequestFields {
  type: number;
  flags?: number;
  cookie?: bigint;
  offset?: bigint | number;
  length?: number;
  payload?: Buffer;
  magic?: number;
}

export function requestBytes(r: RequestFields): Buffer {
  return Buffer.concat([
    u32(r.magic ?? NBD.REQUEST_MAGIC), u16(r.flags ?? 0), u16(r.type), u64(r.cookie ?? 1n),
    u64(r.offset ?? 0), u32(r.length ?? r.payload?.length ?? 0), r.payload ?? Buffer.alloc(0),
  ]);
}

export interface OptionReply { opt: number; type: number; data: Buffer }
export interface SimpleReply { error: number; cookie: bigint; data: Buffer }
export interface Chunk { flags: number; type: number; cookie: bigint; payload: Buffer }

export class RawClient {
  readonly socket: Socket;
  private buf: Buffer = Buffer.alloc(0);
  /** Arrived after `buf`, joined only when a read needs them (a 48 MiB reply copied once, not per chunk). */
  private pend: Buffer[] = [];
  private have = 0;
  private ended = false;
  private waiter: (() => void) | null = null;
  /** Resolves when the server closes the connection (or the socket errors). */
  readonly closed: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.pend.push(d);
      this.have += d.length;
      this.wake();
    });
    this.closed = new Promise((resolve) => {
      const done = (): void => { this.ended = true; this.wake(); resolve(); };
      socket.once('close', done);
      socket.once('end', done);
    });
    socket.on('error', () => { /* a reset is an answer too; `closed` reports it */ });
  }

  /** A client over a socket already set up (e.g. a TLS socket after STARTTLS). */
  static over(socket: Socket): RawClient {
    return new RawClient(socket);
  }

  static async connect(port: number, host = '127.0.0.1'): Promise<RawClient> {
    const s = connect(port, host);
    s.setNoDelay(true);
    await once(s, 'connect');
    return new RawClient(s);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** Exactly n bytes; throws PeerClosedError if the server closes first. */
  async read(n: number, timeoutMs = RAW_READ_TIMEOUT_MS): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buf.length + this.have < n) {
      if (this.ended) throw new PeerClosedError(`server closed the connection (wanted ${n} bytes, had ${this.buf.length + this.have})`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${n} bytes (had ${this.buf.length + this.have})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => { clearTimeout(t); resolve(); };
      });
    }
    if (this.buf.length < n) {
      this.buf = Buffer.concat([this.buf, ...this.pend]);
      this.pend = [];
      this.have = 0;
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** True when the server closes the connection within the time (all pending input discarded). */
  async closesWithin(ms = RAW_READ_TIMEOUT_MS): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms); }),
    ]);
    clearTimeout(timer);
    return r;
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Reads the 18-byte greeting and checks it; returns the handshake flags. */
  async greeting(): Promise<number> {
    const g = await this.read(18);
    if (g.readBigUInt64BE(0) !== NBD.NBDMAGIC || g.readBigUInt64BE(8) !== NBD.IHAVEOPT) {
      throw new Error(`bad greeting ${g.toString('hex')}`);
    }
    return g.readUInt16BE(16);
  }

  /** Greeting, then client flags FIXED_NEWSTYLE|NO_ZEROES. */
  async handshake(): Promise<void> {
    await this.greeting();
    this.write(u32(NBD.FLAG_FIXED_NEWSTYLE | NBD.FLAG_NO_ZEROES));
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== NBD.OPT_REPLY_MAGIC) throw new Error(`bad option reply magic ${h.toString('hex')}`);
    const len = h.readUInt32BE(16);
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.read(len) };
  }

  /** Sends an option and collects replies up to the final one (ACK or an error). */
  async option(opt: number, data: Buffer = Buffer.alloc(0)): Promise<OptionReply[]> {
    this.write(optionBytes(opt, data));
    return this.replies();
  }

  async replies(): Promise<OptionReply[]> {
    const all: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      all.push(r);
      if (r.type === NBD.REP_ACK || (r.type & 0x80000000) !== 0) return all;
    }
  }

  /** Negotiates structured replies if asked, then GO; returns size and transmission flags. */
  async go(name: string, opts: { structured?: boolean } = {}): Promise<{ size: bigint; flags: number }> {
    if (opts.structured) {
      const sr = await this.option(NBD.OPT_STRUCTURED_REPLY);
      if (sr.at(-1)?.type !== NBD.REP_ACK) throw new Error(`STRUCTURED_REPLY refused: ${sr.at(-1)?.type}`);
    }
    const replies = await this.option(NBD.OPT_GO, goData(name));
    const last = replies.at(-1)!;
    if (last.type !== NBD.REP_ACK) throw new Error(`GO refused: 0x${last.type.toString(16)} ${last.data.toString()}`);
    const info = replies.find((r) => r.type === NBD.REP_INFO && r.data.readUInt16BE(0) === NBD.INFO_EXPORT);
    if (!info) throw new Error('GO without NBD_INFO_EXPORT');
    return { size: info.data.readBigUInt64BE(2), flags: info.data.readUInt16BE(10) };
  }

  request(r: RequestFields): void {
    this.write(requestBytes(r));
  }

  /** A simple reply; `dataLength` bytes follow when error is 0 (READ). */
  async simpleReply(dataLength = 0): Promise<SimpleReply> {
    const h = await this.read(16);
    const magic = h.readUInt32BE(0);
    if (magic !== NBD.SIMPLE_REPLY_MAGIC) throw new Error(`expected a simple reply, got magic 0x${magic.toString(16)}`);
    const error = h.readUInt32BE(4);
    const data = error === 0 && dataLength > 0 ? await this.read(dataLength) : Buffer.alloc(0);
    return { error, cookie: h.readBigUInt64BE(8), data };
  }

  async chunk(): Promise<Chunk> {
    const h = await this.read(20);
    const magic = h.readUInt32BE(0);
    if (magic !== NBD.STRUCTURED_REPLY_MAGIC) throw new Error(`expected a structured chunk, got magic 0x${magic.toString(16)}`);
    return { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), cookie: h.readBigUInt64BE(8), payload: await this.read(h.readUInt32BE(16)) };
  }

  /** All chunks of one structured reply, up to the DONE flag. */
  async structuredReply(): Promise<Chunk[]> {
    const all: Chunk[] = [];
    for (;;) {
      const c = await this.chunk();
      all.push(c);
      if (c.flags & NBD.REPLY_FLAG_DONE) return all;
    }
  }
}

/** The error of a structured reply: the errno of its ERROR/ERROR_OFFSET chunk, 0 if none. */
export function chunkError(chunks: Chunk[]): number {
  const e = chunks.find((c) => (c.type & 0x8000) !== 0);
  return e ? e.payload.readUInt32BE(0) : 0;
}
