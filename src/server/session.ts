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
// Longer than a few hundred lines: the phases share one socket, decoder and reply writer, and the
// TLS upgrade, access checks, budgets and metrics hook into them; the TLS and budget mechanics
// themselves live in tls.ts, access.ts and memory-budget.ts.
import type { Duplex } from 'node:stream';
import {
  BASE_ALLOCATION_ID, Cmd, CmdFlag, MAX_BLOCK_STATUS_EXTENTS, MAX_DF_READ, MAX_REQUEST, NbdErrno, ReplyFlag,
  StateFlag, nameOfCmd, nameOfErrno, nameOfOpt,
} from '../protocol/constants.ts';
import { InboundDecoder, type InboundHandler } from '../protocol/decoder.ts';
import { ProtocolError, RequestError, toNbdErrno } from '../protocol/errors.ts';
import { encodeGreeting } from '../protocol/handshake.ts';
import {
  encodeBlockStatus, encodeErrorChunk, encodeOffsetDataHeader, encodeOffsetHole, encodeSimpleReply,
  type RequestHeader, type StatusDescriptor,
} from '../protocol/transmission.ts';
import { appendExtent, type Extent } from '../storage/device.ts';
import { log } from '../util/log.ts';
import { AccessView, Grant, normalizeAddress, type AccessRules, type ClientIdentity } from './access.ts';
import type { ExportLease, ExportResolver } from './exports.ts';
import {
  SERVER_HANDSHAKE_FLAGS, allowedCommandFlags, applyClientFlags, initialNegotiationState, negotiate,
  type NegotiationState,
} from './negotiate.ts';
import type { MemoryBudget } from './memory-budget.ts';
import { ReplyWriter } from './reply-writer.ts';
import type { RequestMetrics } from './request-metrics.ts';
import { TlsMode, upgradeToTls, type TlsMaterial } from './tls.ts';

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

/** Structured reads shorter than this are sent as one data chunk: a hole lookup costs more than it saves. */
export const SPARSE_READ_MIN = 64 * 1024;

/** The server's TLS settings now (SIGHUP may replace the material between connections). */
export interface TlsSettings {
  mode: TlsMode;
  material: TlsMaterial | null;
  exportNeedsTls(name: string): boolean;
}

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
}

const EMPTY = Buffer.alloc(0);
/** After we end our side, how long the peer may take to close its own. */
const CLOSE_LINGER_MS = 5_000;

export class Session implements InboundHandler {
  phase: Phase = Phase.Options;
  readonly closed: Promise<void>;
  private socket: Duplex;
  private readonly opts: Required<SessionOptions>;
  private readonly decoder: InboundDecoder;
  private writer: ReplyWriter;
  private readonly identity: ClientIdentity;
  private tlsVersion: string | null = null;
  /** The rules the current lease was granted under, and the grant. */
  private grantedBy: AccessRules | null = null;
  private granted: Grant = Grant.ReadWrite;
  private stallTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly unsubscribeBudget: () => void;
  /** Bytes this connection holds of the shared budget (charged at accept, released at flush). */
  private charged = 0;
  private readonly state: NegotiationState = initialNegotiationState();
  private lease: ExportLease | null = null;
  private baseAllocation = false;
  private inFlight = 0;
  private inFlightBytes = 0;
  private writeBlocked = false;
  private readingPaused = false;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private handshakeStartedAt = 0;
  /** Exports the handshake deadline has been extended for. */
  private deadlineListed = 0;
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
      ...opts,
    };
    this.identity = { address: normalizeAddress(this.opts.remoteAddress), names: [] };
    this.decoder = new InboundDecoder(this);
    this.writer = new ReplyWriter(socket);
    this.closed = new Promise((r) => (this.resolveClosed = r));
    this.unsubscribeBudget = this.opts.budget ? this.opts.budget.subscribe(() => this.updateFlow()) : () => undefined;
  }

  get exportName(): string | null {
    return this.lease?.name ?? null;
  }

  info(): SessionInfo {
    return { peer: this.opts.label, identity: [...this.identity.names], tls: this.tlsVersion, export: this.exportName };
  }

  private readonly onData = (chunk: Buffer): void => {
    try {
      this.decoder.push(chunk);
    } catch (e) {
      // A bug of ours, never the client's bytes alone: drop this connection, keep the server.
      log.error(`${this.opts.label}: internal error, closing connection`, e);
      this.destroy();
    }
  };

  private readonly onDrain = (): void => {
    this.writeBlocked = false;
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = null;
    this.updateFlow();
  };

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
    this.handshakeStartedAt = Date.now();
    this.armHandshakeTimer();
    this.writer.send(encodeGreeting(SERVER_HANDSHAKE_FLAGS));
  }

  /** Stop reading requests, finish the ones in flight, close (server stop, forced rollback). */
  shutdown(reason: string): Promise<void> {
    if (this.phase === Phase.Options) {
      this.destroy();
    } else if (this.phase === Phase.Transmission) {
      log.info(`${this.opts.label}: closing: ${reason}`);
      this.phase = Phase.ShuttingDown;
      this.decoder.kill();
      this.updateFlow();
      this.maybeFinish();
    }
    return this.closed;
  }

  destroy(): void {
    this.decoder.kill();
    this.socket.destroy();
  }

  // ---- decoder events ----

  onClientFlags(flags: number): void {
    const r = applyClientFlags(this.state, flags);
    if (!r.ok) {
      log.warn(`${this.opts.label}: ${r.reason}, closing`);
      this.destroy();
    }
  }

  onOption(opt: number, data: Buffer): void {
    if (this.phase !== Phase.Options) return;
    log.debug(`${this.opts.label}: option ${nameOfOpt(opt)} (${data.length} bytes)`);
    const tls = this.opts.tls();
    const result = negotiate(this.state, {
      exports: this.exportsView(),
      shuttingDown: this.opts.isShuttingDown(),
      ...(tls ? { tls: { mode: tls.mode, active: this.tlsVersion !== null, exportNeedsTls: (n: string) => tls.exportNeedsTls(n) } } : {}),
    }, opt, data);
    if (result.next === 'starttls') {
      this.startTls(result.replies, tls?.material ?? null);
      return;
    }
    if (result.next === 'transmission') {
      const rules = this.opts.access();
      const lease = this.exportsView(rules).acquire(result.exportName, (reason) => void this.shutdown(reason));
      if (!lease) {
        log.warn(`${this.opts.label}: export '${result.exportName}' vanished during the handshake`);
        this.destroy();
        return;
      }
      this.lease = lease;
      this.grantedBy = rules;
      this.granted = rules ? rules.grant(this.identity, lease.name) : Grant.ReadWrite;
      this.baseAllocation = result.baseAllocation;
      this.sendReplies(result.replies);
      this.clearHandshakeTimer();
      this.phase = Phase.Transmission; // spec "Transmission phase": right after the final reply
      this.decoder.startTransmission();
      if (this.opts.idleTimeoutMs > 0) {
        this.idleTimer = setTimeout(() => this.onIdle(), this.opts.idleTimeoutMs);
        this.idleTimer.unref();
      }
      log.info(`${this.opts.label}: export '${lease.name}'${lease.device.readOnly ? ' (read-only)' : ''}, structured replies ${this.state.structuredReplies ? 'on' : 'off'}`);
      return;
    }
    this.sendReplies(result.replies);
    if (this.state.listedExports !== this.deadlineListed && this.handshakeTimer) this.armHandshakeTimer();
    if (result.next === 'close') {
      log.info(`${this.opts.label}: ${result.reason}, closing`);
      this.phase = Phase.ClientDone;
      this.decoder.kill();
      this.closeGracefully();
    }
  }

  onProtocolError(error: ProtocolError): void {
    log.warn(`${this.opts.label}: protocol error ${error.code}: ${error.message}; closing`);
    // Replies already queued still go out (end, not destroy); in-flight ones are dropped.
    this.phase = Phase.Dead;
    this.closeGracefully();
  }

  onRequest(h: RequestHeader, payload: Buffer | null): void {
    if (this.phase !== Phase.Transmission || !this.lease) return;
    const lease = this.lease;
    if (this.opts.access() !== this.grantedBy && this.revokedByNewRules(lease.name)) return;
    if (h.type === Cmd.DISC) {
      this.phase = Phase.ClientDone; // spec: finish outstanding requests, then close
      this.decoder.kill();
      this.maybeFinish();
      return;
    }
    lease.counters.requests++;
    const m = this.opts.metrics;
    const t0 = m ? m.start(lease.name) : 0;
    const invalid = this.validate(h, payload);
    if (invalid) {
      lease.counters.errors++;
      log.debug(`${this.opts.label}: ${nameOfCmd(h.type)} rejected: ${nameOfErrno(invalid.errno)} ${invalid.message}`);
      this.replyError(h, invalid.errno, invalid.message);
      m?.finish(lease.name, h.type, h.length, invalid.errno, t0);
      return;
    }
    const cost = (h.type === Cmd.READ || h.type === Cmd.WRITE) ? h.length : 0;
    this.inFlight++;
    this.inFlightBytes += cost;
    if (this.opts.budget) {
      this.opts.budget.charge(cost);
      this.charged += cost;
    }
    this.idleTimer?.refresh();
    this.updateFlow();
    this.execute(h, payload ?? EMPTY).then(
      () => {
        m?.finish(lease.name, h.type, h.length, NbdErrno.OK, t0);
        this.complete(cost);
      },
      (e: unknown) => {
        lease.counters.errors++;
        const errno = toNbdErrno(e, h.flags);
        log.warn(`${this.opts.label}: ${nameOfCmd(h.type)} offset ${h.offset} length ${h.length} failed: ${nameOfErrno(errno)}`, e);
        this.replyError(h, errno, e instanceof Error ? e.message : String(e));
        m?.finish(lease.name, h.type, h.length, errno, t0);
        this.complete(cost);
      },
    );
  }

  // ---- TLS and access ----

  /** The exports this client may reach under `rules` (all of them without rules). */
  private exportsView(rules: AccessRules | null = this.opts.access()): ExportResolver {
    if (!rules) return this.opts.exports;
    return new AccessView(this.opts.exports, (name) => rules.grant(this.identity, name));
  }

  /**
   * Rules were reloaded: a connection that lost its grant (or went from rw to ro) is closed now,
   * before this request runs; otherwise it keeps going under the new rules.
   */
  private revokedByNewRules(exportName: string): boolean {
    const rules = this.opts.access();
    const now = rules ? rules.grant(this.identity, exportName) : Grant.ReadWrite;
    if (now === this.granted || (now === Grant.ReadWrite && this.granted === Grant.ReadOnly)) {
      this.grantedBy = rules;
      return false;
    }
    log.warn(`${this.opts.label}: access to '${exportName}' revoked by reloaded rules (${this.granted} -> ${now}), closing`);
    this.phase = Phase.ShuttingDown;
    this.decoder.kill();
    this.updateFlow();
    this.maybeFinish();
    return true;
  }

  /** STARTTLS accepted: the ACK goes out in clear, then TLS takes over the same socket. */
  private startTls(replies: Buffer[], material: TlsMaterial | null): void {
    if (this.decoder.bufferedBytes > 0 || !material) {
      // The client may not send before our reply ("STARTTLS"): clear text here is an attack or a bug.
      log.warn(`${this.opts.label}: ${material ? 'bytes after STARTTLS before our reply' : 'no TLS material'}, closing`);
      this.destroy();
      return;
    }
    const raw = this.socket;
    this.decoder.pause();
    raw.pause();
    this.detach(raw);
    raw.write(Buffer.concat(replies), () => {
      if (raw.destroyed) return;
      const up = upgradeToTls(raw, material);
      this.socket = up.socket;
      this.writer = new ReplyWriter(up.socket);
      this.attach(up.socket);
      up.ready.then((peer) => {
        this.tlsVersion = peer.version;
        this.identity.names = peer.names;
        log.info(`${this.opts.label}: TLS ${peer.version}${peer.names.length ? `, client ${peer.psk !== null ? 'PSK identity' : 'certificate'} ${peer.names.join(', ')}` : ''}`);
        this.decoder.resume();
      }, (e: unknown) => {
        log.warn(`${this.opts.label}: TLS handshake failed: ${e instanceof Error ? e.message : String(e)}`);
        this.destroy();
      });
    });
  }

  // ---- requests ----

  /** The request's errno if it must be refused before touching storage (spec "Request types"). */
  private validate(h: RequestHeader, payload: Buffer | null): RequestError | null {
    const dev = this.lease!.device;
    const allowed = allowedCommandFlags(this.state.structuredReplies);
    const bad = (errno: NbdErrno, message: string): RequestError => new RequestError(errno, message);
    const end = h.offset + h.length;
    let flagMask: number = CmdFlag.FUA;
    let writes = false;
    switch (h.type) {
      case Cmd.READ:
        flagMask = allowed.read;
        break;
      case Cmd.WRITE:
        writes = true;
        if (payload === null && h.length > MAX_REQUEST) return bad(NbdErrno.EINVAL, `write of ${h.length} bytes exceeds ${MAX_REQUEST}`);
        break;
      case Cmd.TRIM:
        writes = true;
        break;
      case Cmd.WRITE_ZEROES:
        writes = true;
        flagMask = allowed.zero;
        break;
      case Cmd.FLUSH:
        if (h.offset !== 0 || h.length !== 0) return bad(NbdErrno.EINVAL, 'FLUSH with nonzero offset or length');
        break;
      case Cmd.CACHE:
        break;
      case Cmd.BLOCK_STATUS:
        flagMask = allowed.blockStatus;
        if (!this.baseAllocation) return bad(NbdErrno.EINVAL, 'BLOCK_STATUS without a negotiated meta context');
        break;
      default:
        return bad(NbdErrno.EINVAL, `unknown command ${h.type}`);
    }
    if ((h.flags & ~flagMask) !== 0) return bad(NbdErrno.EINVAL, `flags 0x${h.flags.toString(16)} not valid for ${nameOfCmd(h.type)}`);
    if (writes && dev.readOnly) return bad(NbdErrno.EPERM, 'export is read-only');
    if (h.type !== Cmd.FLUSH) {
      if (h.length === 0) return bad(NbdErrno.EINVAL, 'zero-length request');
      // Like nbdkit: data-bearing writes past the end are ENOSPC, everything else EINVAL.
      const errno = h.type === Cmd.WRITE || h.type === Cmd.WRITE_ZEROES ? NbdErrno.ENOSPC : NbdErrno.EINVAL;
      if (end > dev.size) return bad(errno, `request ends at ${end}, beyond the export size ${dev.size}`);
    }
    if (h.type === Cmd.READ && h.flags & CmdFlag.DF && h.length > MAX_DF_READ) {
      return bad(NbdErrno.EOVERFLOW, `DF read of ${h.length} bytes exceeds ${MAX_DF_READ}`);
    }
    if (h.type === Cmd.READ && h.length > MAX_REQUEST) {
      return bad(NbdErrno.EINVAL, `read of ${h.length} bytes exceeds ${MAX_REQUEST}`);
    }
    return null;
  }

  private async execute(h: RequestHeader, payload: Buffer): Promise<void> {
    const lease = this.lease!;
    const dev = lease.device;
    const fua = (h.flags & CmdFlag.FUA) !== 0;
    switch (h.type) {
      case Cmd.READ:
        if (this.state.structuredReplies) await this.readStructured(h);
        else {
          const buf = Buffer.allocUnsafe(h.length);
          await dev.read(h.offset, h.length, buf);
          this.send(encodeSimpleReply(NbdErrno.OK, h.cookie), buf);
        }
        lease.counters.bytesRead += h.length;
        return;
      case Cmd.WRITE:
        await dev.write(h.offset, payload, { fua });
        lease.counters.bytesWritten += h.length;
        break;
      case Cmd.FLUSH:
        await dev.flush();
        break;
      case Cmd.TRIM:
        await dev.trim(h.offset, h.length, { fua });
        break;
      case Cmd.WRITE_ZEROES:
        await dev.zero(h.offset, h.length, {
          fua,
          noHole: (h.flags & CmdFlag.NO_HOLE) !== 0,
          fast: (h.flags & CmdFlag.FAST_ZERO) !== 0,
        });
        break;
      case Cmd.CACHE:
        await dev.cache(h.offset, h.length);
        break;
      case Cmd.BLOCK_STATUS:
        await this.blockStatus(h);
        return;
    }
    this.send(encodeSimpleReply(NbdErrno.OK, h.cookie));
  }

  /** Structured READ: holes as OFFSET_HOLE, data as OFFSET_DATA, the last chunk DONE; DF: one chunk. */
  private async readStructured(h: RequestHeader): Promise<void> {
    const dev = this.lease!.device;
    const buf = Buffer.allocUnsafe(h.length);
    if ((h.flags & CmdFlag.DF) !== 0 || h.length < SPARSE_READ_MIN) {
      await dev.read(h.offset, h.length, buf);
      this.send(encodeOffsetDataHeader(ReplyFlag.DONE, h.cookie, h.offset, h.length), buf);
      return;
    }
    const runs = await this.coveringExtents(h.offset, h.length);
    // Read every data run first: an error must be reported before any chunk goes out.
    let pos = 0;
    for (const r of runs) {
      if (!r.zero) await dev.read(h.offset + pos, r.length, buf.subarray(pos, pos + r.length));
      pos += r.length;
    }
    pos = 0;
    runs.forEach((r, i) => {
      const flags = i === runs.length - 1 ? ReplyFlag.DONE : 0;
      if (r.zero) this.send(encodeOffsetHole(flags, h.cookie, h.offset + pos, r.length));
      else this.send(encodeOffsetDataHeader(flags, h.cookie, h.offset + pos, r.length), buf.subarray(pos, pos + r.length));
      pos += r.length;
    });
  }

  /** Extents exactly covering [offset, offset+length), adjacent runs of the same kind merged. */
  private async coveringExtents(offset: number, length: number): Promise<Extent[]> {
    const dev = this.lease!.device;
    const out: Extent[] = [];
    let pos = 0;
    while (pos < length) {
      const got = await dev.extents(offset + pos, length - pos);
      const before = pos;
      for (const e of got) {
        const len = Math.min(e.length, length - pos);
        if (len <= 0) break;
        appendExtent(out, len, e.hole, e.zero);
        pos += len;
      }
      // No progress (no extents, or only empty ones): a storage bug must not spin forever.
      if (pos === before) throw new RequestError(NbdErrno.EIO, 'storage returned no extents');
    }
    return out;
  }

  private async blockStatus(h: RequestHeader): Promise<void> {
    const dev = this.lease!.device;
    const got = await dev.extents(h.offset, h.length);
    const descriptors: StatusDescriptor[] = [];
    let covered = 0;
    for (const e of got) {
      const len = Math.min(e.length, h.length - covered);
      if (len <= 0) break;
      const flags = (e.hole ? StateFlag.HOLE : 0) | (e.zero ? StateFlag.ZERO : 0);
      const last = descriptors[descriptors.length - 1];
      if (last && last.flags === flags) last.length += len;
      else {
        if (descriptors.length === MAX_BLOCK_STATUS_EXTENTS) break;
        descriptors.push({ length: len, flags });
      }
      covered += len;
    }
    if (descriptors.length === 0) throw new RequestError(NbdErrno.EIO, 'storage returned no extents');
    if (h.flags & CmdFlag.REQ_ONE) descriptors.length = 1;
    this.send(encodeBlockStatus(ReplyFlag.DONE, h.cookie, BASE_ALLOCATION_ID, descriptors));
  }

  private replyError(h: RequestHeader, errno: NbdErrno, message: string): void {
    // Structured clients get the message too; the kernel client only speaks simple replies.
    if (this.state.structuredReplies) this.send(encodeErrorChunk(ReplyFlag.DONE, h.cookie, errno, message));
    else this.send(encodeSimpleReply(errno, h.cookie));
  }

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

  /** A client that stops reading its replies is dropped after stallTimeoutMs without a drain. */
  private armStallTimer(): void {
    if (this.stallTimer || this.opts.stallTimeoutMs <= 0) return;
    this.stallTimer = setTimeout(() => {
      log.warn(`${this.opts.label}: replies unread for ${this.opts.stallTimeoutMs} ms (${this.socket.writableLength} bytes queued), closing`);
      this.destroy();
    }, this.opts.stallTimeoutMs);
    this.stallTimer.unref();
  }

  // ---- flow control and closing ----

  private complete(cost: number): void {
    this.inFlight--;
    this.inFlightBytes -= cost;
    // The reply (queued before this) holds its buffer until the kernel has it.
    const budget = this.opts.budget;
    if (budget && cost > 0) {
      this.writer.whenFlushed(() => {
        budget.release(cost);
        this.charged -= cost;
        this.updateFlow();
      });
    }
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

  /** (Re)arms the handshake deadline: the base timeout plus the allowance for listed exports. */
  private armHandshakeTimer(): void {
    this.clearHandshakeTimer();
    this.deadlineListed = this.state.listedExports;
    const deadline = this.handshakeStartedAt + this.opts.handshakeTimeoutMs + this.opts.handshakeMsPerListedExport * this.deadlineListed;
    this.handshakeTimer = setTimeout(() => {
      log.warn(`${this.opts.label}: handshake timed out`);
      this.destroy();
    }, Math.max(0, deadline - Date.now()));
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
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
    this.clearHandshakeTimer();
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    this.lease?.release();
    this.resolveClosed();
  }
}
