// A connection's receive memory, reused: the socket reads (net.Socket `onread`) into the rest of a
// slab, and a slab goes back to a small free list once the decoder has consumed its bytes and
// every WRITE whose payload lies in it has landed. Node's 'data' path reads each 64 KiB into fresh
// memory: one ArrayBuffer per read, its pages faulted in by the kernel's copy, and their external
// memory driving V8's scavenges and mark-compacts (bench/README.md, "Sequential writes: reused
// receive slabs"). Knows nothing of NBD: the session tells it what the decoder consumed and which
// stream bytes a payload spans.
//
// Node 20 takes `onread` only in `new net.Socket()`, so an accepted socket (paused at accept,
// never read) is rewrapped around its handle by `readIntoSlabs`. After STARTTLS the same slabs take
// the decrypted bytes (`readTlsIntoSlabs`): otherwise Node's TLS socket hands every TLS record
// (<= 16 KiB; a 1 MiB WRITE is 64 of them) to a fresh buffer and the Readable stream machinery.
//
// Bounds: a request in flight pins at most the slabs its payload spans, and a held 4 KiB WRITE
// pins its whole slab: the slabs tell the session (`onPinned`) each time a slab gains its first
// hold or loses its last, and the session charges those bytes to the server's memory budget in
// place of the payloads in them. Free slabs go to a pool shared by the server's connections (one
// sequential writer at queue depth 8 cycles ~40 of them), at most FREE_SLABS_MAX; the rest are
// dropped to the garbage collector like any buffer.

import net from 'node:net';
import type tls from 'node:tls';

/** One slab: reads fill it front to back. */
export const SLAB_BYTES = 256 * 1024;
/** A read target shorter than this moves reading to the next slab (fewer, larger reads). */
export const SLAB_READ_MIN = 64 * 1024;
/** Free slabs kept for reuse by all connections together (32 MiB). */
export const FREE_SLABS_MAX = 128;

/** Free slabs, shared by the connections of a server. */
export class SlabPool {
  private readonly free: Buffer[] = [];
  private readonly max: number;
  /** Slabs handed out that were reused (tests). */
  reused = 0;

  constructor(max = FREE_SLABS_MAX) {
    this.max = max;
  }

  get size(): number {
    return this.free.length;
  }

  take(): Buffer {
    const b = this.free.pop();
    if (b === undefined) return Buffer.allocUnsafeSlow(SLAB_BYTES);
    this.reused++;
    return b;
  }

  give(b: Buffer): void {
    if (this.free.length < this.max) this.free.push(b);
  }
}

interface Slab {
  buf: Buffer;
  /** Stream offset of buf[0]. */
  start: number;
  /** Stream offset past its last byte; Infinity while reading into it. */
  end: number;
  /** WRITEs in flight whose payload lies (partly) in it. */
  holds: number;
  /** Read before recycle() was called (the option phase): never reused, views may be kept. */
  keep: boolean;
}

/** Undoes a hold(): call once, when the payload's bytes are no longer read. */
export type Release = () => void;

const NO_RELEASE: Release = () => undefined;

export class ReceiveSlabs {
  /** Slabs read into and not yet free, in stream order; the last is being read into. */
  private readonly live: Slab[] = [];
  private readonly pool: SlabPool;
  private current: Slab;
  /** Bytes of the current slab read so far. */
  private used = 0;
  private received = 0;
  private consumedAt = 0;
  private recycling = false;
  private sink: ((chunk: Buffer) => void) | null = null;
  private pinSink: ((bytes: number) => void) | null = null;
  constructor(pool: SlabPool) {
    this.pool = pool;
    this.current = this.open();
  }

  /** The `onread` option for `new net.Socket` (its buffer generator is called after each read). */
  readonly onread = {
    buffer: (): Buffer => this.target(),
    callback: (n: number): void => this.onRead(n),
  };

  /** Where received bytes go (the session's decoder); null: dropped (the socket was handed to TLS). */
  deliverTo(sink: ((chunk: Buffer) => void) | null): void {
    this.sink = sink;
  }

  /** Told +SLAB_BYTES when a slab gains its first hold, -SLAB_BYTES when it loses its last. */
  onPinned(sink: ((bytes: number) => void) | null): void {
    this.pinSink = sink;
  }

  /** From now on slabs are reused; earlier ones (option data may be kept) never are. */
  recycle(): void {
    this.recycling = true;
  }

  /** Total bytes received. */
  get bytes(): number {
    return this.received;
  }

  /** The decoder has consumed every byte before stream offset `at`. */
  consumed(at: number): void {
    if (at <= this.consumedAt) return;
    this.consumedAt = at;
    for (let i = 0; i < this.live.length;) {
      const s = this.live[i]!;
      if (s.end > at) break;
      if (s.holds === 0) this.retire(i);
      else i++;
    }
  }

  /** A payload occupies stream bytes [start, end): its slabs stay until the release is called. */
  hold(start: number, end: number): Release {
    const held: Slab[] = [];
    for (const s of this.live) {
      if (s.start >= end) break;
      if (s.end > start) {
        if (s.holds++ === 0) this.pin(SLAB_BYTES);
        held.push(s);
      }
    }
    if (held.length === 0) return NO_RELEASE;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const s of held) {
        if (--s.holds > 0) continue;
        this.pin(-SLAB_BYTES);
        if (s.end <= this.consumedAt) {
          const i = this.live.indexOf(s);
          if (i >= 0) this.retire(i);
        }
      }
    };
  }

  private pin(bytes: number): void {
    this.pinSink?.(bytes);
  }

  private onRead(n: number): void {
    const chunk = this.current.buf.subarray(this.used, this.used + n);
    this.used += n;
    this.received += n;
    this.sink?.(chunk);
  }

  /** The next read's target: the rest of the current slab, or a new slab. */
  private target(): Buffer {
    if (this.current.buf.length - this.used >= SLAB_READ_MIN) return this.current.buf.subarray(this.used);
    this.current.end = this.received;
    const old = this.current;
    this.current = this.open();
    if (old.end <= this.consumedAt && old.holds === 0) this.retire(this.live.indexOf(old));
    return this.current.buf;
  }

  private open(): Slab {
    // Option-phase slabs may keep views alive past their retirement: fresh, and never given back.
    const s: Slab = { buf: this.recycling ? this.pool.take() : Buffer.allocUnsafeSlow(SLAB_BYTES), start: this.received, end: Infinity, holds: 0, keep: !this.recycling };
    this.used = 0;
    this.live.push(s);
    return s;
  }

  private retire(i: number): void {
    const s = this.live[i]!;
    this.live.splice(i, 1);
    if (!s.keep) this.pool.give(s.buf);
  }
}

/**
 * A socket that reads into `slabs`, over the handle of `accepted` (from a server created with
 * `pauseOnConnect`, so nothing was read yet). `accepted` stays the server's record of the
 * connection: it is destroyed when the new socket closes, which lets `server.close()` finish.
 */
export function readIntoSlabs(accepted: net.Socket, slabs: ReceiveSlabs, allowHalfOpen: boolean): net.Socket {
  const handle = (accepted as unknown as { _handle: unknown })._handle;
  const socket = new net.Socket({ handle, allowHalfOpen, onread: slabs.onread } as net.SocketConstructorOpts);
  socket.once('close', () => accepted.destroy());
  return socket;
}

/** The symbol-keyed fields in which Node 20's net.Socket keeps an `onread` option. */
const ONREAD_FIELDS = ['kBuffer', 'kBufferGen', 'kBufferCb'] as const;

/**
 * Makes `socket`, a TLSSocket just made over an existing socket (STARTTLS) and not yet read, deliver
 * its decrypted bytes into `slabs` instead of through 'data' events. Node 20's TLSSocket takes
 * `onread` only for a socket it connects itself (it passes `onread: null` to net.Socket when it
 * wraps one), so this sets the three fields net.Socket's constructor sets from `onread` and gives
 * the TLS handle (a StreamBase) its first buffer, as net.Socket does for its own handle. Each record is
 * still one callback (TLSWrap::ClearOut reads a record at a time), but into the slab, with no
 * allocation and no stream machinery. False, and the socket left on 'data' events, when this
 * Node has not the fields or the handle method.
 */
export function readTlsIntoSlabs(socket: tls.TLSSocket, slabs: ReceiveSlabs): boolean {
  const own = Object.getOwnPropertySymbols(socket);
  const [kBuffer, kBufferGen, kBufferCb] = ONREAD_FIELDS.map((name) => own.find((s) => s.description === name));
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle;
  if (!kBuffer || !kBufferGen || !kBufferCb || typeof handle?.useUserBuffer !== 'function') return false;
  const fields = socket as unknown as Record<symbol, unknown>;
  if (fields[kBuffer] !== null) return false; // already reading into a buffer of its own
  const first = slabs.onread.buffer();
  fields[kBuffer] = first;
  fields[kBufferGen] = slabs.onread.buffer;
  fields[kBufferCb] = slabs.onread.callback;
  handle.useUserBuffer(first);
  return true;
}
