// The server's inbound byte stream as a pure, resumable state machine (ws Receiver style): feed
// it chunks in any split, it calls the handler once per complete message. No sockets, no timers.
//
//  state          consumes                      then
//  ClientFlags    4 bytes                       Option (handshake)
//  Option         16-byte option header         OptionData
//  OptionData     `length` bytes                Option (or Request after GO/EXPORT_NAME)
//  Request        28-byte request header        Payload (WRITE) / Discard (oversize WRITE) / Request
//  Payload        `length` bytes                Request
//  Discard        `length` bytes, dropped       Request  (keeps framing for a refused WRITE)
//  Dead           nothing                       -        (after a protocol error or close)
import { Cmd, CLIENT_FLAGS_LEN, MAX_OPTION_LEN, MAX_REQUEST, OPTION_HEADER_LEN, REQUEST_HEADER_LEN } from './constants.ts';
import { ProtocolError } from './errors.ts';
import { decodeOptionHeader } from './handshake.ts';
import { decodeRequestHeader, type RequestHeader } from './transmission.ts';
import type { Gather } from '../util/gather.ts';

const EMPTY = Buffer.alloc(0);
/**
 * A payload shorter than this that spans chunks is copied (cheap) instead of kept as views: views
 * keep whole socket chunks (64 KiB each) alive until the write lands, which for a small write
 * would hold many times the bytes the memory budget charges it.
 */
export const PAYLOAD_VIEWS_MIN = 64 * 1024;

export const DecoderState = {
  ClientFlags: 0,
  Option: 1,
  OptionData: 2,
  Request: 3,
  Payload: 4,
  Discard: 5,
  Dead: 6,
} as const;
export type DecoderState = (typeof DecoderState)[keyof typeof DecoderState];

/**
 * A WRITE payload: one view when it arrived in one socket chunk, else the views of the chunks it
 * spans, in order (util/gather.ts): never copied (the copy into one buffer cost 6 % of a 1 MiB
 * sequential write's CPU, plus the page faults of a fresh 1 MiB buffer per request).
 */
export type Payload = Buffer | Gather;

export interface InboundHandler {
  onClientFlags(flags: number): void;
  onOption(opt: number, data: Buffer): void;
  /**
   * A request. `payload` is the WRITE data (views of the socket's chunks, which Node never reuses
   * and the decoder never writes to), or null: no payload, or a WRITE over MAX_REQUEST whose data
   * is being discarded (answer EINVAL).
   */
  onRequest(header: RequestHeader, payload: Payload | null): void;
  onProtocolError(error: ProtocolError): void;
}

export class InboundDecoder {
  private chunks: Buffer[] = [];
  private head = 0; // read position inside chunks[0]
  private available = 0;
  private state: DecoderState = DecoderState.ClientFlags;
  private need = CLIENT_FLAGS_LEN;
  private pendingOpt = 0;
  private pendingRequest: RequestHeader | null = null;
  private discardLeft = 0;
  private paused = false;
  private running = false;
  private readonly handler: InboundHandler;

  constructor(handler: InboundHandler) {
    this.handler = handler;
  }

  get bufferedBytes(): number {
    return this.available;
  }

  /** The session moves the decoder into transmission after GO / EXPORT_NAME succeed. */
  startTransmission(): void {
    if (this.state === DecoderState.Dead) return;
    this.state = DecoderState.Request;
    this.need = REQUEST_HEADER_LEN;
  }

  /** Stop delivering messages (caps reached); bytes keep being buffered until resume(). */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.run();
  }

  /** No more messages will be delivered; buffered input is dropped. */
  kill(): void {
    this.state = DecoderState.Dead;
    this.chunks = [];
    this.available = 0;
    this.head = 0;
  }

  get dead(): boolean {
    return this.state === DecoderState.Dead;
  }

  push(chunk: Buffer): void {
    if (this.state === DecoderState.Dead || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.available += chunk.length;
    this.run();
  }

  private run(): void {
    if (this.running) return; // a handler fed us re-entrantly: the outer loop continues
    this.running = true;
    try {
      while (!this.paused && this.step());
    } finally {
      this.running = false;
    }
  }

  /** One state transition; false when more input is needed or we stopped. */
  private step(): boolean {
    switch (this.state) {
      case DecoderState.Dead:
        return false;
      case DecoderState.Discard: {
        if (this.available === 0) return false;
        const n = Math.min(this.discardLeft, this.available);
        this.skip(n);
        this.discardLeft -= n;
        if (this.discardLeft === 0) this.expectRequest();
        return true;
      }
      default:
        break;
    }
    if (this.available < this.need) return false;
    switch (this.state) {
      case DecoderState.ClientFlags: {
        const flags = this.take(CLIENT_FLAGS_LEN).readUInt32BE(0);
        this.state = DecoderState.Option;
        this.need = OPTION_HEADER_LEN;
        this.handler.onClientFlags(flags);
        return true;
      }
      case DecoderState.Option: {
        const h = decodeOptionHeader(this.take(OPTION_HEADER_LEN));
        if (h instanceof ProtocolError) return this.fail(h);
        if (h.length > MAX_OPTION_LEN) {
          return this.fail(new ProtocolError('NBD_ERR_OPTION_TOO_LONG', `option ${h.opt} length ${h.length} > ${MAX_OPTION_LEN}`));
        }
        this.pendingOpt = h.opt;
        this.state = DecoderState.OptionData;
        this.need = h.length;
        return true;
      }
      case DecoderState.OptionData: {
        const data = this.take(this.need);
        this.state = DecoderState.Option;
        this.need = OPTION_HEADER_LEN;
        this.handler.onOption(this.pendingOpt, data);
        return true;
      }
      case DecoderState.Request: {
        const h = decodeRequestHeader(this.take(REQUEST_HEADER_LEN));
        if (h instanceof ProtocolError) return this.fail(h);
        // The header is copied out: the cookie view must survive the chunk being released.
        h.cookie = Buffer.from(h.cookie);
        if (h.type === Cmd.WRITE && h.length > 0) {
          if (h.length > MAX_REQUEST) {
            this.state = DecoderState.Discard;
            this.discardLeft = h.length;
            this.handler.onRequest(h, null);
            return true;
          }
          this.pendingRequest = h;
          this.state = DecoderState.Payload;
          this.need = h.length;
          return true;
        }
        this.handler.onRequest(h, null);
        return true;
      }
      case DecoderState.Payload: {
        const h = this.pendingRequest!;
        this.pendingRequest = null;
        const payload = this.takeViews(this.need);
        this.expectRequest();
        this.handler.onRequest(h, payload);
        return true;
      }
      default:
        return false;
    }
  }

  private expectRequest(): void {
    if (this.state === DecoderState.Dead) return;
    this.state = DecoderState.Request;
    this.need = REQUEST_HEADER_LEN;
  }

  private fail(e: ProtocolError): boolean {
    this.kill();
    this.handler.onProtocolError(e);
    return false;
  }

  /** n bytes as a view when they lie in one chunk, else one copy. Caller ensured n <= available. */
  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) {
      const view = first.subarray(this.head, this.head + n);
      this.advance(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const m = Math.min(n - filled, c.length - this.head);
      c.copy(out, filled, this.head, this.head + m);
      filled += m;
      this.advance(m);
    }
    return out;
  }

  /** n bytes as views of the chunks they lie in: one view, or a list when they span chunks (and are not short). */
  private takeViews(n: number): Payload {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n || n < PAYLOAD_VIEWS_MIN) return this.take(n);
    const out: Buffer[] = [];
    while (n > 0) {
      const c = this.chunks[0]!;
      const m = Math.min(n, c.length - this.head);
      out.push(this.head === 0 && m === c.length ? c : c.subarray(this.head, this.head + m));
      this.advance(m);
      n -= m;
    }
    return out;
  }

  private skip(n: number): void {
    while (n > 0) {
      const c = this.chunks[0]!;
      const m = Math.min(n, c.length - this.head);
      this.advance(m);
      n -= m;
    }
  }

  private advance(n: number): void {
    this.head += n;
    this.available -= n;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
