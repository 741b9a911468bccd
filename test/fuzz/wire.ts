// Test-side plumbing shared by the session and fuzz tests: an in-memory duplex pair (like a
// socketpair), and a small NBD client that speaks raw bytes through the codec's own encoders and
// decoders (the mirror pairs the codec provides for tests).
import { Duplex } from 'node:stream';
import { ProtocolError, orThrow } from '../../src/protocol/errors.ts';
import {
  ClientFlag, Cmd, Opt, OPTION_REPLY_MAGIC, REQUEST_HEADER_LEN, Rep, ReplyFlag, SIMPLE_REPLY_LEN,
  SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_HEADER_LEN, STRUCTURED_REPLY_MAGIC, META_CONTEXT_BASE_ALLOCATION,
  EXPORT_NAME_REPLY_LEN, EXPORT_NAME_ZEROES, GREETING_LEN,
} from '../../src/protocol/constants.ts';
import {
  decodeExportNameReply, decodeGreeting, decodeInfo, decodeOptionReply, encodeClientFlags, encodeInfoRequest,
  encodeMetaContextRequest, encodeOption, type InfoReply, type OptionReply,
} from '../../src/protocol/handshake.ts';
import { decodeChunkPayload, encodeRequestHeader, type ChunkPayload } from '../../src/protocol/transmission.ts';
import type { ExportResolver } from '../../src/server/exports.ts';
import { Session, type SessionOptions } from '../../src/server/session.ts';

/** One end of an in-memory pair: what one end writes the other reads, on a later turn (like a socket). */
class PairEnd extends Duplex {
  peer: PairEnd | null = null;
  /** Every chunk this end wrote, in order. */
  readonly written: Buffer[] = [];

  constructor() {
    super({ allowHalfOpen: true });
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    const copy = Buffer.from(chunk); // the writer may reuse its buffer once we call back
    this.written.push(copy);
    const peer = this.peer!;
    setImmediate(() => {
      if (!peer.destroyed) peer.push(copy);
    });
    cb();
  }

  override _final(cb: (e?: Error | null) => void): void {
    const peer = this.peer!;
    setImmediate(() => {
      if (!peer.destroyed) peer.push(null);
    });
    cb();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    const peer = this.peer!;
    // A reset: the peer sees its stream end abruptly, after what was already in flight.
    setImmediate(() => {
      if (!peer.destroyed) peer.destroy();
    });
    cb(err);
  }
}

export function duplexPair(): [PairEnd, PairEnd] {
  const a = new PairEnd();
  const b = new PairEnd();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

export type { PairEnd };

export type Reply =
  | { kind: 'simple'; errno: number; cookie: string; data?: Buffer }
  | { kind: 'chunk'; flags: number; type: number; cookie: string; payload: ChunkPayload };

export interface RequestSpec {
  type: number;
  flags?: number;
  offset?: number;
  length?: number;
  cookie?: bigint;
}

export class EofError extends Error {}

/** A raw client over one end of a pair (or any Duplex). */
export class Wire {
  readonly sock: Duplex;
  private buf: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  ended = false;
  closedFlag = false;
  readonly closed: Promise<void>;
  /** In-flight requests by cookie (hex), to know how much data a simple READ reply carries. */
  readonly pending = new Map<string, { type: number; offset: number; length: number }>();
  private nextCookie = 1n;

  constructor(sock: Duplex) {
    this.sock = sock;
    sock.on('data', (c: Buffer) => {
      this.buf = this.buf.length === 0 ? c : Buffer.concat([this.buf, c]);
      this.wake();
    });
    sock.on('end', () => {
      this.ended = true;
      this.wake();
      sock.end();
    });
    sock.on('error', () => {});
    this.closed = new Promise((r) => sock.on('close', () => {
      this.closedFlag = true;
      this.ended = true;
      this.wake();
      r();
    }));
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  get buffered(): number {
    return this.buf.length;
  }

  async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.ended) throw new EofError(`EOF: wanted ${n} bytes, have ${this.buf.length}`);
      await new Promise<void>((r) => (this.waiter = r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Resolves true when the server closed its side with nothing more to read. */
  async eof(): Promise<boolean> {
    while (!this.ended) await new Promise<void>((r) => (this.waiter = r));
    return this.buf.length === 0;
  }

  send(...parts: Buffer[]): void {
    for (const p of parts) this.sock.write(p);
  }

  // ---- handshake ----

  async greeting(): Promise<number> {
    const g = decodeGreeting(await this.take(GREETING_LEN));
    if (g instanceof ProtocolError) throw new Error(`bad greeting: ${g.message}`);
    return g.flags;
  }

  async optionReply(): Promise<OptionReply> {
    const head = await this.take(20);
    if (head.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error(`bad option reply magic ${head.subarray(0, 8).toString('hex')}`);
    const data = await this.take(head.readUInt32BE(16));
    return orThrow(decodeOptionReply(Buffer.concat([head, data]))).reply;
  }

  /** Replies to one option up to and including its final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === Rep.ACK || (r.type & 0x80000000) !== 0) return out;
    }
  }

  option(opt: number, data?: Buffer): void {
    this.send(encodeOption(opt, data));
  }

  async exportNameReply(noZeroes: boolean): Promise<{ size: number; flags: number; raw: Buffer }> {
    const raw = await this.take(EXPORT_NAME_REPLY_LEN + (noZeroes ? 0 : EXPORT_NAME_ZEROES));
    return { ...decodeExportNameReply(raw), raw };
  }

  /**
   * A whole handshake. `via: 'go'` (default) with optional structured replies and base:allocation;
   * `via: 'export-name'` (the old way). Returns the export's size and transmission flags.
   */
  async handshake(o: {
    exportName?: string; structured?: boolean; metaContext?: boolean; via?: 'go' | 'export-name'; noZeroes?: boolean;
  } = {}): Promise<{ size: number; flags: number; infos: InfoReply[] }> {
    const name = o.exportName ?? 'disk';
    await this.greeting();
    const noZeroes = o.noZeroes ?? true;
    this.send(encodeClientFlags(ClientFlag.FixedNewstyle | (noZeroes ? ClientFlag.NoZeroes : 0)));
    if (o.structured) {
      this.option(Opt.STRUCTURED_REPLY);
      const r = await this.optionReplies();
      if (r[r.length - 1]!.type !== Rep.ACK) throw new Error('structured replies refused');
    }
    if (o.metaContext) {
      this.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest(name, [META_CONTEXT_BASE_ALLOCATION]));
      const r = await this.optionReplies();
      if (r.length !== 2) throw new Error(`SET_META_CONTEXT: ${r.map((x) => x.type).join(',')}`);
    }
    if (o.via === 'export-name') {
      this.option(Opt.EXPORT_NAME, Buffer.from(name, 'utf8'));
      const r = await this.exportNameReply(noZeroes);
      return { size: r.size, flags: r.flags, infos: [] };
    }
    this.option(Opt.GO, encodeInfoRequest(name, []));
    const replies = await this.optionReplies();
    const last = replies[replies.length - 1]!;
    if (last.type !== Rep.ACK) throw new Error(`GO refused: 0x${(last.type >>> 0).toString(16)} ${last.data.toString()}`);
    const infos = replies.slice(0, -1).map((r) => orThrow(decodeInfo(r.data)));
    const exp = infos.find((i) => i.type === 0) as { size: number; flags: number } | undefined;
    if (!exp) throw new Error('GO without INFO_EXPORT');
    return { size: exp.size, flags: exp.flags, infos };
  }

  // ---- transmission ----

  /** Sends a request (cookie chosen when not given); returns its cookie as hex. */
  request(r: RequestSpec, payload?: Buffer): string {
    const cookie = Buffer.alloc(8);
    cookie.writeBigUInt64BE(r.cookie ?? this.nextCookie++);
    const h = encodeRequestHeader({ flags: r.flags ?? 0, type: r.type, cookie, offset: r.offset ?? 0, length: r.length ?? payload?.length ?? 0 });
    const key = cookie.toString('hex');
    if (r.type !== Cmd.DISC) this.pending.set(key, { type: r.type, offset: r.offset ?? 0, length: h.readUInt32BE(24) });
    this.send(payload ? Buffer.concat([h, payload]) : h);
    return key;
  }

  async reply(): Promise<Reply> {
    const magicBuf = await this.take(4);
    const magic = magicBuf.readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const rest = await this.take(SIMPLE_REPLY_LEN - 4);
      const errno = rest.readUInt32BE(0);
      const cookie = rest.subarray(4, 12).toString('hex');
      const p = this.pending.get(cookie);
      if (!p) throw new Error(`simple reply for unknown cookie ${cookie}`);
      this.pending.delete(cookie);
      if (errno === 0 && p.type === Cmd.READ) return { kind: 'simple', errno, cookie, data: Buffer.from(await this.take(p.length)) };
      return { kind: 'simple', errno, cookie };
    }
    if (magic === STRUCTURED_REPLY_MAGIC) {
      const rest = await this.take(STRUCTURED_REPLY_HEADER_LEN - 4);
      const flags = rest.readUInt16BE(0);
      const type = rest.readUInt16BE(2);
      const cookie = rest.subarray(4, 12).toString('hex');
      const payloadBuf = Buffer.from(await this.take(rest.readUInt32BE(12)));
      const payload = decodeChunkPayload(type, payloadBuf);
      if (payload instanceof ProtocolError) throw new Error(`malformed chunk type ${type} length ${payloadBuf.length}`);
      if (!this.pending.has(cookie)) throw new Error(`chunk for unknown cookie ${cookie}`);
      if (flags & ReplyFlag.DONE) this.pending.delete(cookie);
      return { kind: 'chunk', flags, type, cookie, payload };
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }

  /** Every chunk of one structured reply (until DONE), for the next reply's cookie. */
  async structuredReply(): Promise<Extract<Reply, { kind: 'chunk' }>[]> {
    const out: Extract<Reply, { kind: 'chunk' }>[] = [];
    for (;;) {
      const r = await this.reply();
      if (r.kind !== 'chunk') throw new Error('expected a structured reply');
      if (out.length > 0 && r.cookie !== out[0]!.cookie) throw new Error('interleaved structured replies');
      out.push(r);
      if (r.flags & ReplyFlag.DONE) return out;
    }
  }
}

export const cookieHex = (n: bigint): string => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b.toString('hex');
};

export const REQUEST_LEN = REQUEST_HEADER_LEN;

/** A Session on one end of a pair and a Wire client on the other. */
export function startSession(exports: ExportResolver, opts: Partial<SessionOptions> & { shuttingDown?: () => boolean } = {}): {
  session: Session; client: Wire; server: PairEnd;
} {
  const [server, client] = duplexPair();
  const { shuttingDown, ...rest } = opts;
  const session = new Session(server, {
    exports,
    label: 'test',
    isShuttingDown: shuttingDown ?? (() => false),
    ...rest,
  });
  session.start();
  return { session, client: new Wire(client), server };
}
