// The option phase of one connection: the negotiation state, the handshake deadline, and who the
// client is and what the access rules grant it. Each option goes through the pure negotiate()
// (negotiate.ts) with the exports this client may see; the outcome tells the session what to do
// with its socket (session.ts owns the socket, the decoder and the phases). The grant an export
// was acquired under is kept here too, so a reload of the rules can revoke it mid-transmission.
import { log } from '../util/log.ts';
import { AccessView, Grant, normalizeAddress, type AccessRules, type ClientIdentity } from './access.ts';
import type { ExportLease, ExportResolver } from './exports.ts';
import { applyClientFlags, initialNegotiationState, negotiate, type NegotiationState } from './negotiate.ts';
import type { TlsMaterial, TlsMode } from './tls.ts';

/** The server's TLS settings now (SIGHUP may replace the material between connections). */
export interface TlsSettings {
  mode: TlsMode;
  material: TlsMaterial | null;
  exportNeedsTls(name: string): boolean;
}

export interface HandshakeOptions {
  exports: ExportResolver;
  label: string;
  isShuttingDown: () => boolean;
  /** The client's address, for access rules (unix sockets: 'unix'). */
  remoteAddress: string;
  tls: () => TlsSettings | null;
  /** The access rules now; null: everything to everyone. */
  access: () => AccessRules | null;
  handshakeTimeoutMs: number;
  handshakeMsPerListedExport: number;
  /** The deadline passed before transmission. */
  onTimeout: () => void;
  /** The registry wants the export's session gone (forced rollback, deletion, stop). */
  onRevoke: (reason: string) => void;
}

/** What the session does after one option. */
export type OptionOutcome =
  | { next: 'options'; replies: Buffer[] }
  /** Send `replies` in clear, then hand the socket to TLS with `material` (null: none configured). */
  | { next: 'starttls'; replies: Buffer[]; material: TlsMaterial | null }
  /** Send `replies`, then serve `lease`. */
  | { next: 'transmission'; replies: Buffer[]; lease: ExportLease; structuredReplies: boolean; baseAllocation: boolean }
  /** The export negotiate() chose could not be acquired (deleted meanwhile): drop the connection. */
  | { next: 'vanished'; exportName: string }
  /** Send `replies`, then close. */
  | { next: 'close'; replies: Buffer[]; reason: string };

export class HandshakePhase {
  readonly identity: ClientIdentity;
  /** The negotiated TLS version once STARTTLS completed. */
  tlsVersion: string | null = null;
  private readonly opts: HandshakeOptions;
  private readonly state: NegotiationState = initialNegotiationState();
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;
  /** Exports the deadline has been extended for. */
  private deadlineListed = 0;
  /** The rules the current lease was granted under, and the grant. */
  private grantedBy: AccessRules | null = null;
  private granted: Grant = Grant.ReadWrite;

  constructor(opts: HandshakeOptions) {
    this.opts = opts;
    this.identity = { address: normalizeAddress(opts.remoteAddress), names: [] };
  }

  /** The greeting went out: the deadline starts. */
  start(): void {
    this.startedAt = Date.now();
    this.armDeadline();
  }

  /** Transmission began or the connection closed. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The client's flags; a reason to close when they are not acceptable. */
  clientFlags(flags: number): string | null {
    const r = applyClientFlags(this.state, flags);
    return r.ok ? null : r.reason;
  }

  option(opt: number, data: Buffer): OptionOutcome {
    const tls = this.opts.tls();
    const result = negotiate(this.state, {
      exports: this.exportsView(),
      shuttingDown: this.opts.isShuttingDown(),
      ...(tls ? { tls: { mode: tls.mode, active: this.tlsVersion !== null, exportNeedsTls: (n: string) => tls.exportNeedsTls(n) } } : {}),
    }, opt, data);
    switch (result.next) {
      case 'starttls':
        return { next: 'starttls', replies: result.replies, material: tls?.material ?? null };
      case 'transmission': {
        const rules = this.opts.access();
        const lease = this.exportsView(rules).acquire(result.exportName, this.opts.onRevoke);
        if (!lease) return { next: 'vanished', exportName: result.exportName };
        this.grantedBy = rules;
        this.granted = rules ? rules.grant(this.identity, lease.name) : Grant.ReadWrite;
        this.stop();
        return { next: 'transmission', replies: result.replies, lease, structuredReplies: this.state.structuredReplies, baseAllocation: result.baseAllocation };
      }
      case 'close':
        return { next: 'close', replies: result.replies, reason: result.reason };
      default:
        // Each LIST extends the deadline by what describing its exports takes the client.
        if (this.state.listedExports !== this.deadlineListed && this.timer) this.armDeadline();
        return { next: 'options', replies: result.replies };
    }
  }

  /**
   * Whether the lease on `exportName` still stands under the rules now. Rules were reloaded: a
   * connection that lost its grant (or went from rw to ro) is closed before its next request runs;
   * otherwise it keeps going under the new rules.
   */
  stillGranted(exportName: string): boolean {
    const rules = this.opts.access();
    if (rules === this.grantedBy) return true;
    const now = rules ? rules.grant(this.identity, exportName) : Grant.ReadWrite;
    if (now === this.granted || (now === Grant.ReadWrite && this.granted === Grant.ReadOnly)) {
      this.grantedBy = rules;
      return true;
    }
    log.warn(`${this.opts.label}: access to '${exportName}' revoked by reloaded rules (${this.granted} -> ${now}), closing`);
    return false;
  }

  /** The exports this client may reach under `rules` (all of them without rules). */
  private exportsView(rules: AccessRules | null = this.opts.access()): ExportResolver {
    if (!rules) return this.opts.exports;
    return new AccessView(this.opts.exports, (name) => rules.grant(this.identity, name));
  }

  /** (Re)arms the deadline: the base timeout plus the allowance for listed exports. */
  private armDeadline(): void {
    this.stop();
    this.deadlineListed = this.state.listedExports;
    const deadline = this.startedAt + this.opts.handshakeTimeoutMs + this.opts.handshakeMsPerListedExport * this.deadlineListed;
    this.timer = setTimeout(() => {
      log.warn(`${this.opts.label}: handshake timed out`);
      this.opts.onTimeout();
    }, Math.max(0, deadline - Date.now()));
  }
}
