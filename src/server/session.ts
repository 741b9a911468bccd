// One NBD connection over any Duplex (a TCP or unix socket, or an in-memory pair in tests, like
// nbdkit -s). Reads bytes into the pure decoder, answers options through negotiate(), then runs
// requests concurrently against the export's block device and replies out of order.
//
//  phase          meaning                                   leaves to
//  Options        handshake: option haggling                Transmission (GO/EXPORT_NAME), ClientDone (ABORT), Dead
//  Transmission   requests in flight, replies out of order  ClientDone (DISC), ShuttingDown (server stop/revoke), Dead
//  ShuttingDown   no new requests read; in-flight finish    Dead
//  ClientDone     client said DISC/ABORT; in-flight finish  Dead
//  Dead           socket closed, lease released             -
//
// The session owns the socket, the decoder, the phases, flow control and closing. The option
// phase's negotiation, deadline and access grants live in handshake-phase.ts; each request is
// validated and answered by dispatch.ts; replies leave through reply-writer.ts; the TLS and
// budget mechanics live in tls.ts and memory-budget.ts. A listener's socket reads into reused
// slabs (receive-slabs.ts), and after STARTTLS its TLS socket too: the session tells them what
// the decoder consumed, holds the slabs of each WRITE's payload until the write settles, and
// charges the slabs so held to the budget. A little over 500 lines because the phases, flow
// control and the close paths all read and change the same connection state; splitting them
// would hand that state around instead of owning it here.
import type { Duplex } from 'node:stream';
import { Cmd, NbdErrno, nameOfCmd, nameOfErrno, nameOfOpt } from '../protocol/constants.ts';
import { InboundDecoder, type InboundHandler, type Payload } from '../protocol/decoder.ts';
import { toNbdErrno, type ProtocolError } from '../protocol/errors.ts';
import { encodeGreeting } from '../protocol/handshake.ts';
import type { RequestHeader } from '../protocol/transmission.ts';
import { log } from '../util/log.ts';
import type { AccessRules } from './access.ts';
import { RequestDispatcher } from './dispatch.ts';
import type { ExportLease, ExportResolver } from './exports.ts';
import { HandshakePhase, type TlsSettings } from './handshake-phase.ts';
import type { MemoryBudget } from './memory-budget.ts';
import { SERVER_HANDSHAKE_FLAGS } from './negotiate.ts';
import { readTlsIntoSlabs, type ReceiveSlabs, type Release } from './receive-slabs.ts';
import { giveReplyBuffers, readReplyBytes } from './reply-buffers.ts';
import { ReplyWriter } from './reply-writer.ts';
import type { RequestMetrics } from './request-metrics.ts';
import { upgradeToTls, type TlsMaterial } from './tls.ts';

export { SPARSE_READ_MIN } from './dispatch.ts';
export type { TlsSettings } from './handshake-phase.ts';

export const Phase = { Dead: 0, ClientDone: 1, ShuttingDown: 2, Options: 3, Transmission: 4 } as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

export const SESSION_DEFAULTS = {
  /** A client that has not reached transmission by then is dropped... */
  handshakeTimeoutMs: 30_000,
  /**
   * ...plus this per export a LIST named: describing each one takes clients a round trip or two
   * (libnbd 1.14's nbdinfo --list waits ~200 ms per export on its own corked LIST_META_CONTEXT).
   */
  handshakeMsPerListedExport: 1_000,
  /** A client that leaves replies unread this long (the socket full, no progress) is dropped. */
  stallTimeoutMs: 60_000,
  /** Transmission with nothing in flight and no request for this long closes; 0: never. */
  idleTimeoutMs: 0,
  /** Requests being processed at once before we stop reading (the kernel keeps up to 128). */
  maxInFlight: 256,
  /** Payload + read bytes in flight before we stop reading. */
  maxInFlightBytes: 128 * 1024 * 1024,
} as const;

/** What `server.stats` shows of a connection. */
export interface SessionInfo {
  peer: string;
  identity: string[];
  tls: string | null;
  export: string | null;
}

export interface SessionOptions {
  exports: ExportResolver;
  label: string;
  isShuttingDown: () => boolean;
  /** Per-export request figures for the metrics endpoint (serve --metrics). */
  metrics?: RequestMetrics | null;
  /** The client's address, for access rules (unix sockets: 'unix'). */
  remoteAddress?: string;
  tls?: () => TlsSettings | null;
  /** The access rules now; null: everything to everyone. */
  access?: () => AccessRules | null;
  handshakeTimeoutMs?: number;
  handshakeMsPerListedExport?: number;
  stallTimeoutMs?: number;
  idleTimeoutMs?: number;
  /** Shared by every connection of the server; null: per-connection caps only. */
  budget?: MemoryBudget | null;
  maxInFlight?: number;
  maxInFlightBytes?: number;
  /**
   * The socket reads into these (receive-slabs.ts: its `onread`), not through 'data' events;
   * null: 'data' events (in-memory streams in tests).
   */
  slabs?: ReceiveSlabs | null;
}

const EMPTY = Buffer.alloc(0);
/** After we end our side, how long the peer may take to close its own. */
const CLOSE_LINGER_MS = 5_000;

export class Session implements InboundHandler {
  phase: Phase = Phase.Options;
  readonly closed: Promise<void>;
  private socket: Duplex;
  private readonly opts: Required<SessionOptions>;
  /** Where the socket reads into, decrypted after STARTTLS; null: 'data' events. */
  private slabs: ReceiveSlabs | null;
  private readonly decoder: InboundDecoder;
  private writer: ReplyWriter;
  private readonly handshake: HandshakePhase;
  /** Set when transmission begins. */
  private dispatch: RequestDispatcher | null = null;
  private stallTimer: NodeJS.Timeout | null = null;
  /** performance.now() when replies last stopped being taken (no drain since); -1: they flow. */
  private blockedSince = -1;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly unsubscribeBudget: () => void;
  /** Bytes this connection holds of the shared budget (charged at accept, released at flush). */
  private charged = 0;
  private lease: ExportLease | null = null;
  private inFlight = 0;
  private inFlightBytes = 0;
  private writeBlocked = false;
  private readingPaused = false;
  private lingerTimer: NodeJS.Timeout | null = null;
  private resolveClosed!: () => void;

  constructor(socket: Duplex, opts: SessionOptions) {
    this.socket = socket;
    this.opts = {
      handshakeTimeoutMs: SESSION_DEFAULTS.handshakeTimeoutMs,
      handshakeMsPerListedExport: SESSION_DEFAULTS.handshakeMsPerListedExport,
      stallTimeoutMs: SESSION_DEFAULTS.stallTimeoutMs,
      idleTimeoutMs: SESSION_DEFAULTS.idleTimeoutMs,
      budget: null,
      maxInFlight: SESSION_DEFAULTS.maxInFlight,
      maxInFlightBytes: SESSION_DEFAULTS.maxInFlightBytes,
      metrics: null,
      remoteAddress: 'unknown',
      tls: () => null,
      access: () => null,
      slabs: null,
      ...opts,
    };
    this.slabs = this.opts.slabs;
    this.slabs?.deliverTo(this.onData);
    this.slabs?.onPinned(this.onSlabsPinned);
    this.handshake = new HandshakePhase({
      exports: this.opts.exports,
      label: this.opts.label,
      isShuttingDown: this.opts.isShuttingDown,
      remoteAddress: this.opts.remoteAddress,
      tls: this.opts.tls,
      access: this.opts.access,
      handshakeTimeoutMs: this.opts.handshakeTimeoutMs,
      handshakeMsPerListedExport: this.opts.handshakeMsPerListedExport,
      onTimeout: () => this.destroy(),
      onRevoke: (reason) => void this.shutdown(reason),
    });
    this.decoder = new InboundDecoder(this);
    this.writer = new ReplyWriter(socket, this.onFlushed, giveReplyBuffers);
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.unsubscribeBudget = this.opts.budget ? this.opts.budget.subscribe(() => this.updateFlow()) : () => undefined;
  }

  get exportName(): string | null {
    return this.lease?.name ?? null;
  }

  info(): SessionInfo {
    return { peer: this.opts.label, identity: [...this.handshake.identity.names], tls: this.handshake.tlsVersion, export: this.exportName };
  }

  private readonly onData = (chunk: Buffer): void => {
    try {
      this.decoder.push(chunk);
      // What the decoder still buffers may lie in earlier slabs; everything before is free.
      if (this.slabs) this.slabs.consumed(this.slabs.bytes - this.decoder.bufferedBytes);
    } catch (e) {
      // A bug of ours, never the client's bytes alone: drop this connection, keep the server.
      log.error(`${this.opts.label}: internal error, closing connection`, e);
      this.destroy();
    }
  };

  private readonly onDrain = (): void => {
    this.writeBlocked = false;
    this.blockedSince = -1; // the stall timer, if running, sees this and stops
    this.updateFlow();
  };

  /** The replies holding `bytes` of the budget have left (reply-writer.ts release). */
  private readonly onFlushed = (bytes: number): void => {
    this.opts.budget?.release(bytes);
    this.charged -= bytes;
    this.updateFlow();
  };

  /**
   * Held payloads pin whole slabs (a 4 KiB WRITE its 256 KiB): those bytes are what the budget
   * holds for the WRITEs in them, charged when a slab is first held, released when its last
   * write settles.
   */
  private readonly onSlabsPinned = (bytes: number): void => {
    if (!this.opts.budget) return;
    if (bytes > 0) this.charge(bytes);
    else this.onFlushed(-bytes);
  };

  /** Takes `bytes` of the shared budget for this connection (given back by onFlushed). */
  private charge(bytes: number): void {
    this.opts.budget?.charge(bytes);
    this.charged += bytes;
  }

  private readonly onSocketError = (e: Error): void => log.debug(`${this.opts.label}: socket error: ${e.message}`);

  private readonly onEnd = (): void => {
    // Client half-closed: nothing more to read. Finish what is in flight, then close.
    if (this.phase === Phase.Transmission || this.phase === Phase.Options) {
      this.phase = Phase.ClientDone;
      this.maybeFinish();
    }
  };

  private readonly onSocketClose = (): void => this.onClose();

  private attach(s: Duplex): void {
    s.on('data', this.onData);
    s.on('drain', this.onDrain);
    s.on('error', this.onSocketError);
    s.on('end', this.onEnd);
    s.on('close', this.onSocketClose);
  }

  private detach(s: Duplex): void {
    s.off('data', this.onData);
    s.off('drain', this.onDrain);
    s.off('end', this.onEnd);
    s.off('close', this.onSocketClose);
    // 'error' stays handled: the raw socket under TLS must never throw.
  }

  start(): void {
    this.attach(this.socket);
    this.handshake.start();
    this.writer.send(encodeGreeting(SERVER_HANDSHAKE_FLAGS));
  }

  /** Stop reading requests, finish the ones in flight, close (server stop, forced rollback). */
  shutdown(reason: string): Promise<void> {
    if (this.phase === Phase.Options) {
      this.destroy();
    } else if (this.phase === Phase.Transmission) {
      log.info(`${this.opts.label}: closing: ${reason}`);
      this.stopReading();
    }
    return this.closed;
  }

  destroy(): void {
    this.decoder.kill();
    this.socket.destroy();
  }

  // ---- decoder events ----

  onClientFlags(flags: number): void {
    const refused = this.handshake.clientFlags(flags);
    if (refused !== null) {
      log.warn(`${this.opts.label}: ${refused}, closing`);
      this.destroy();
    }
  }

  onOption(opt: number, data: Buffer): void {
    if (this.phase !== Phase.Options) return;
    log.debug(`${this.opts.label}: option ${nameOfOpt(opt)} (${data.length} bytes)`);
    const r = this.handshake.option(opt, data);
    switch (r.next) {
      case 'starttls':
        this.startTls(r.replies, r.material);
        return;
      case 'vanished':
        log.warn(`${this.opts.label}: export '${r.exportName}' vanished during the handshake`);
        this.destroy();
        return;
      case 'transmission': {
        const lease = r.lease;
        this.lease = lease;
        this.dispatch = new RequestDispatcher(lease, { structuredReplies: r.structuredReplies, baseAllocation: r.baseAllocation }, (a, b) => this.send(a, b), (buf) => this.writer.recycle(buf));
        this.sendReplies(r.replies);
        this.phase = Phase.Transmission; // spec "Transmission phase": right after the final reply
        this.decoder.startTransmission();
        this.slabs?.recycle();
        if (this.opts.idleTimeoutMs > 0) {
          this.idleTimer = setTimeout(() => this.onIdle(), this.opts.idleTimeoutMs);
          this.idleTimer.unref();
        }
        log.info(`${this.opts.label}: export '${lease.name}'${lease.device.readOnly ? ' (read-only)' : ''}, structured replies ${r.structuredReplies ? 'on' : 'off'}`);
        return;
      }
      case 'close':
        this.sendReplies(r.replies);
        log.info(`${this.opts.label}: ${r.reason}, closing`);
        this.phase = Phase.ClientDone;
        this.decoder.kill();
        this.closeGracefully();
        return;
      case 'options':
        this.sendReplies(r.replies);
        return;
    }
  }

  onProtocolError(error: ProtocolError): void {
    log.warn(`${this.opts.label}: protocol error ${error.code}: ${error.message}; closing`);
    // Replies already queued still go out (end, not destroy); in-flight ones are dropped.
    this.phase = Phase.Dead;
    this.closeGracefully();
  }

  onRequest(h: RequestHeader, payload: Payload | null): void {
    const lease = this.lease;
    const dispatch = this.dispatch;
    if (this.phase !== Phase.Transmission || !lease || !dispatch) return;
    // The payload's bytes end where the decoder stands; their slabs stay until the write lands.
    const slabs = this.slabs;
    const done: Release | null = payload !== null && slabs ? slabs.hold(slabs.bytes - this.decoder.bufferedBytes - h.length, slabs.bytes - this.decoder.bufferedBytes) : null;
    if (!this.handshake.stillGranted(lease.name)) {
      done?.();
      this.stopReading();
      return;
    }
    if (h.type === Cmd.DISC) {
      this.phase = Phase.ClientDone; // spec: finish outstanding requests, then close
      this.decoder.kill();
      this.maybeFinish();
      return;
    }
    lease.counters.requests++;
    const m = this.opts.metrics;
    const t0 = m ? m.start(lease.name) : 0;
    const invalid = dispatch.validate(h, payload);
    if (invalid) {
      lease.counters.errors++;
      log.debug(`${this.opts.label}: ${nameOfCmd(h.type)} rejected: ${nameOfErrno(invalid.errno)} ${invalid.message}`);
      done?.();
      dispatch.replyError(h, invalid.errno, invalid.message);
      m?.finish(lease.name, h.type, h.length, invalid.errno, t0);
      return;
    }
    // A READ holds its reply buffer: a pooled one is its size class (reply-buffers.ts).
    const cost = h.type === Cmd.READ ? readReplyBytes(h.length) : h.type === Cmd.WRITE ? h.length : 0;
    // A payload held in the slabs is charged as the slabs it pins (onSlabsPinned), not twice.
    const budgetCost = done !== null ? 0 : cost;
    this.inFlight++;
    this.inFlightBytes += cost;
    if (this.opts.budget) this.charge(budgetCost);
    this.idleTimer?.refresh();
    this.updateFlow();
    dispatch.execute(h, payload ?? EMPTY).then(
      () => {
        done?.();
        m?.finish(lease.name, h.type, h.length, NbdErrno.OK, t0);
        this.complete(cost, budgetCost);
      },
      (e: unknown) => {
        done?.();
        lease.counters.errors++;
        const errno = toNbdErrno(e, h.flags);
        log.warn(`${this.opts.label}: ${nameOfCmd(h.type)} offset ${h.offset} length ${h.length} failed: ${nameOfErrno(errno)}`, e);
        dispatch.replyError(h, errno, e instanceof Error ? e.message : String(e));
        m?.finish(lease.name, h.type, h.length, errno, t0);
        this.complete(cost, budgetCost);
      },
    );
  }

  // ---- TLS ----

  /** STARTTLS accepted: the ACK goes out in clear, then TLS takes over the same socket. */
  private startTls(replies: Buffer[], material: TlsMaterial | null): void {
    if (this.decoder.bufferedBytes > 0 || !material) {
      // The client may not send before our reply ("STARTTLS"): clear text here is an attack or a bug.
      log.warn(`${this.opts.label}: ${material ? 'bytes after STARTTLS before our reply' : 'no TLS material'}, closing`);
      this.destroy();
      return;
    }
    const raw = this.socket;
    // TLS reads the raw socket from now on; the slabs take its decrypted bytes instead.
    this.slabs?.deliverTo(null);
    this.decoder.pause();
    raw.pause();
    this.detach(raw);
    raw.write(Buffer.concat(replies), () => {
      if (raw.destroyed) return;
      const up = upgradeToTls(raw, material);
      if (this.slabs && readTlsIntoSlabs(up.socket, this.slabs)) this.slabs.deliverTo(this.onData);
      else this.slabs = null; // 'data' events, fresh buffers: nothing to tell the slabs
      this.socket = up.socket;
      this.writer = new ReplyWriter(up.socket, this.onFlushed, giveReplyBuffers);
      this.attach(up.socket);
      up.ready.then((peer) => {
        this.handshake.tlsVersion = peer.version;
        this.handshake.identity.names = peer.names;
        log.info(`${this.opts.label}: TLS ${peer.version}${peer.names.length ? `, client ${peer.psk !== null ? 'PSK identity' : 'certificate'} ${peer.names.join(', ')}` : ''}`);
        this.decoder.resume();
      }, (e: unknown) => {
        log.warn(`${this.opts.label}: TLS handshake failed: ${e instanceof Error ? e.message : String(e)}`);
        this.destroy();
      });
    });
  }

  // ---- replies ----

  /** Option replies: a client that does not read them (a LIST flood) stops being read too. */
  private sendReplies(parts: Buffer[]): void {
    if (!this.writer.sendAll(parts)) {
      this.writeBlocked = true;
      this.updateFlow();
    }
  }

  private send(a: Buffer, b?: Buffer): void {
    if (this.phase === Phase.Dead) return;
    if (!this.writer.send(a, b)) {
      this.writeBlocked = true;
      this.armStallTimer();
      this.updateFlow();
    }
  }

  /**
   * A client that stops reading its replies is dropped after stallTimeoutMs without a drain.
   * The socket blocks and drains once per batch of replies under load, so one timer outlives
   * the drains and, when it fires, looks at how long the current block has lasted (a timer set
   * and cleared per batch cost ~1% of the CPU of a 4 KiB read; bench/README.md, issue 11).
   */
  private armStallTimer(): void {
    if (this.blockedSince >= 0 || this.opts.stallTimeoutMs <= 0) return;
    this.blockedSince = performance.now();
    if (!this.stallTimer) this.startStallTimer(this.opts.stallTimeoutMs);
  }

  private startStallTimer(ms: number): void {
    this.stallTimer = setTimeout(this.onStallTimer, ms);
    this.stallTimer.unref();
  }

  private readonly onStallTimer = (): void => {
    this.stallTimer = null;
    if (this.blockedSince < 0) return; // drained since
    const left = this.blockedSince + this.opts.stallTimeoutMs - performance.now();
    if (left > 0) {
      this.startStallTimer(Math.ceil(left));
      return;
    }
    log.warn(`${this.opts.label}: replies unread for ${this.opts.stallTimeoutMs} ms (${this.socket.writableLength} bytes queued), closing`);
    this.destroy();
  };

  // ---- flow control and closing ----

  private complete(cost: number, budgetCost: number): void {
    this.inFlight--;
    this.inFlightBytes -= cost;
    // The reply (queued before this) holds its buffer until the kernel has it.
    if (this.opts.budget && budgetCost > 0) this.writer.release(budgetCost);
    this.updateFlow();
    this.maybeFinish();
  }

  /** No more requests are read (server stop, revoked access); in-flight ones finish, then close. */
  private stopReading(): void {
    this.phase = Phase.ShuttingDown;
    this.decoder.kill();
    this.updateFlow();
    this.maybeFinish();
  }

  /** Pause reading while caps are reached or the socket is full; resume when they are not. */
  private updateFlow(): void {
    // While closing, the decoder is dead but the socket keeps flowing so the peer's FIN is seen.
    const reading = this.phase === Phase.Transmission || this.phase === Phase.Options;
    const pause = reading && (this.writeBlocked || this.inFlight >= this.opts.maxInFlight || this.inFlightBytes >= this.opts.maxInFlightBytes
      || (this.opts.budget !== null && !this.opts.budget.mayRead(this.charged)));
    if (pause === this.readingPaused) return;
    this.readingPaused = pause;
    if (pause) {
      this.decoder.pause();
      this.socket.pause();
    } else {
      this.socket.resume();
      this.decoder.resume();
    }
  }

  private maybeFinish(): void {
    if ((this.phase === Phase.ClientDone || this.phase === Phase.ShuttingDown) && this.inFlight === 0) this.closeGracefully();
  }

  /** End our side (queued replies flush); a peer that never closes its side is cut off later. */
  private closeGracefully(): void {
    if (this.lingerTimer) return;
    // Nothing is in flight: the export is free now, before the client can see our side close. A
    // script that disconnects and at once deletes or rolls back must not meet VOLUME_BUSY.
    this.lease?.release();
    this.socket.end();
    this.socket.resume();
    this.lingerTimer = setTimeout(() => this.socket.destroy(), CLOSE_LINGER_MS);
    this.lingerTimer.unref();
  }

  private onIdle(): void {
    this.idleTimer = null;
    if (this.phase !== Phase.Transmission) return;
    if (this.inFlight > 0) {
      this.idleTimer = setTimeout(() => this.onIdle(), this.opts.idleTimeoutMs);
      this.idleTimer.unref();
      return;
    }
    void this.shutdown(`idle for ${this.opts.idleTimeoutMs} ms`);
  }

  private onClose(): void {
    this.phase = Phase.Dead;
    this.unsubscribeBudget();
    if (this.stallTimer) clearTimeout(this.stallTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.decoder.kill();
    this.handshake.stop();
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.lease?.release();
    this.resolveClosed();
  }
}
