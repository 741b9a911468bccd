// Option haggling as a pure function (spec "Fixed newstyle negotiation", "Option types"):
// given the negotiation state and one option, the replies to send and where to go next.
// No sockets here; the session writes the replies and acts on `next`.
import {
  BASE_ALLOCATION_ID, ClientFlag, CmdFlag, HandshakeFlag, Info, MAX_HANDSHAKE_OPTION_BYTES,
  MAX_HANDSHAKE_REPLY_BYTES, MAX_OPTIONS, MAX_PAYLOAD, MAX_STRING_LEN, META_CONTEXT_BASE_ALLOCATION, OPTION_HEADER_LEN,
  OPTIONS_PER_LISTED_EXPORT, Opt, Rep, TxFlag,
} from '../protocol/constants.ts';
import {
  decodeInfoRequest, decodeMetaContextRequest, encodeExportNameReply, encodeInfo, encodeOptionReply,
  encodeRepMetaContext, encodeRepServer,
} from '../protocol/handshake.ts';
import { ProtocolError } from '../protocol/errors.ts';
import type { ExportResolver, ResolvedExport } from './exports.ts';
import { TlsMode } from './tls.ts';

export const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes;
const KNOWN_CLIENT_FLAGS = ClientFlag.FixedNewstyle | ClientFlag.NoZeroes;
/** Smallest request we accept: any byte (partial chunks go through read-modify-write). */
export const MIN_BLOCK_SIZE = 1;

export interface NegotiationState {
  fixedNewstyle: boolean;
  noZeroes: boolean;
  structuredReplies: boolean;
  /** Export the SET_META_CONTEXT selection is valid for, and whether base:allocation was chosen. */
  metaContext: { exportName: string; baseAllocation: boolean } | null;
  /** What this handshake has cost so far, against the limits in constants.ts. */
  optionCount: number;
  optionBytes: number;
  replyBytes: number;
  /** Exports in the largest LIST reply sent: each allows OPTIONS_PER_LISTED_EXPORT more options. */
  listedExports: number;
}

export function initialNegotiationState(): NegotiationState {
  return {
    fixedNewstyle: false, noZeroes: false, structuredReplies: false, metaContext: null,
    optionCount: 0, optionBytes: 0, replyBytes: 0, listedExports: 0,
  };
}

/** Options this handshake may send in all, given what it has listed. */
export function optionAllowance(state: NegotiationState): number {
  return MAX_OPTIONS + OPTIONS_PER_LISTED_EXPORT * state.listedExports;
}

export type ClientFlagsResult = { ok: true } | { ok: false; reason: string };

/** Unknown client flag bits: the server MUST close (spec "Newstyle negotiation"). */
export function applyClientFlags(state: NegotiationState, flags: number): ClientFlagsResult {
  if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) return { ok: false, reason: `unknown client flags 0x${flags.toString(16)}` };
  state.fixedNewstyle = (flags & ClientFlag.FixedNewstyle) !== 0;
  state.noZeroes = (flags & ClientFlag.NoZeroes) !== 0;
  return { ok: true };
}

export interface NegotiationContext {
  exports: ExportResolver;
  /** The server is stopping: every option but ABORT gets ERR_SHUTDOWN. */
  shuttingDown: boolean;
  /** Absent: TLS off. */
  tls?: TlsContext;
}

/** The spec's "TLS support": forced (require), or offered with some exports needing it (selective). */
export interface TlsContext {
  mode: TlsMode;
  /** STARTTLS has completed on this connection. */
  active: boolean;
  /** Exports that need TLS even in mode `on`. */
  exportNeedsTls(name: string): boolean;
}

export type NegotiationResult =
  | { next: 'options'; replies: Buffer[] }
  /** Enter transmission on `exportName` (the session acquires it) after sending `replies`. */
  | { next: 'transmission'; replies: Buffer[]; exportName: string; baseAllocation: boolean }
  /** Send `replies`, then close: ABORT, or a client we cannot talk to any more. */
  | { next: 'close'; replies: Buffer[]; reason: string }
  /** Send `replies` (the ACK) in clear, then the TLS handshake takes over the socket. */
  | { next: 'starttls'; replies: Buffer[] };

/** Transmission flags of one export, truthful for what we serve (spec "Transmission flags"). */
export function transmissionFlags(exp: ResolvedExport, structuredReplies: boolean): number {
  let flags = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.SEND_CACHE;
  if (exp.device.multiConn) flags |= TxFlag.CAN_MULTI_CONN;
  if (structuredReplies) flags |= TxFlag.SEND_DF;
  if (exp.device.readOnly) flags |= TxFlag.READ_ONLY;
  else flags |= TxFlag.SEND_FUA | TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES | TxFlag.SEND_FAST_ZERO;
  return flags;
}

/** Command flags each command accepts (beyond FUA, accepted everywhere once SEND_FUA is set). */
export function allowedCommandFlags(structuredReplies: boolean): { read: number; zero: number; blockStatus: number } {
  return {
    read: CmdFlag.FUA | (structuredReplies ? CmdFlag.DF : 0),
    zero: CmdFlag.FUA | CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO,
    blockStatus: CmdFlag.FUA | CmdFlag.REQ_ONE,
  };
}

/** An error reply; its text is cut to MAX_STRING_LEN bytes (libnbd drops a longer one, and the connection). */
const err = (opt: number, type: number, message: string): Buffer => encodeOptionReply(opt, type, utf8Prefix(message, MAX_STRING_LEN));

/** The longest prefix of `text` that fits in `max` UTF-8 bytes without splitting a character. */
export function utf8Prefix(text: string, max: number): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length <= max) return b;
  let end = max;
  while (end > 0 && ((b.readUInt8(end) & 0xc0) === 0x80)) end--; // b[end] continues a character: back off
  return b.subarray(0, end);
}
const ack = (opt: number): Buffer => encodeOptionReply(opt, Rep.ACK);

/**
 * The text of the refusal of an export lookup() did not resolve: why it cannot be served when it
 * exists (NBD_REP_ERR_UNKNOWN is "the requested export is not available"), else unknown.
 */
function notServed(ctx: NegotiationContext, name: string): string {
  return ctx.exports.unavailable?.(name) ?? `unknown export '${name}'`;
}

/**
 * One option in, its replies out. The handshake's budgets (options, option bytes, reply bytes) are
 * charged here; a client past any of them is closed without a reply, like nbdkit past its count.
 */
export function negotiate(state: NegotiationState, ctx: NegotiationContext, opt: number, data: Buffer): NegotiationResult {
  state.optionCount++;
  state.optionBytes += OPTION_HEADER_LEN + data.length;
  if (state.optionCount > optionAllowance(state)) {
    return { next: 'close', replies: [], reason: `more than ${optionAllowance(state)} options (${MAX_OPTIONS} + ${OPTIONS_PER_LISTED_EXPORT} per listed export)` };
  }
  if (state.optionBytes > MAX_HANDSHAKE_OPTION_BYTES) {
    return { next: 'close', replies: [], reason: `more than ${MAX_HANDSHAKE_OPTION_BYTES} bytes of options` };
  }
  const result = answer(state, ctx, opt, data);
  for (const r of result.replies) state.replyBytes += r.length;
  if (state.replyBytes > MAX_HANDSHAKE_REPLY_BYTES) {
    return { next: 'close', replies: [], reason: `replies would exceed ${MAX_HANDSHAKE_REPLY_BYTES} bytes` };
  }
  return result;
}

function answer(state: NegotiationState, ctx: NegotiationContext, opt: number, data: Buffer): NegotiationResult {
  // Without fixed newstyle the client cannot parse option replies: only EXPORT_NAME is possible.
  if (!state.fixedNewstyle && opt !== Opt.EXPORT_NAME) {
    return { next: 'close', replies: [], reason: `option ${opt} from a client without fixed newstyle` };
  }
  if (ctx.shuttingDown && opt !== Opt.ABORT) {
    if (opt === Opt.EXPORT_NAME) return { next: 'close', replies: [], reason: 'server shutting down' };
    return { next: 'options', replies: [err(opt, Rep.ERR_SHUTDOWN, 'server is shutting down')] };
  }
  const tls = ctx.tls;
  // Forced TLS ("TLS support"): before STARTTLS nothing is listed, described or read by name.
  if (tls && tls.mode === TlsMode.Require && !tls.active && opt !== Opt.STARTTLS && opt !== Opt.ABORT) {
    if (opt === Opt.EXPORT_NAME) return { next: 'close', replies: [], reason: 'EXPORT_NAME before STARTTLS (TLS required)' };
    return { next: 'options', replies: [err(opt, Rep.ERR_TLS_REQD, 'TLS is required: send STARTTLS first')] };
  }
  /** Selective TLS: this export needs TLS and the connection has none yet. */
  const needsTls = (name: string): boolean => tls !== undefined && !tls.active && tls.exportNeedsTls(name);
  switch (opt) {
    case Opt.EXPORT_NAME: {
      const name = data.toString('utf8');
      const exp = ctx.exports.lookup(name);
      // No error reply exists for EXPORT_NAME: the spec says terminate.
      if (!exp) return { next: 'close', replies: [], reason: notServed(ctx, name) };
      if (needsTls(exp.name)) return { next: 'close', replies: [], reason: `export '${exp.name}' needs TLS` };
      return {
        next: 'transmission',
        replies: [encodeExportNameReply(exp.device.size, transmissionFlags(exp, state.structuredReplies), state.noZeroes)],
        exportName: exp.name,
        baseAllocation: baseAllocationFor(state, name, exp),
      };
    }
    case Opt.ABORT:
      return { next: 'close', replies: [ack(opt)], reason: 'client sent ABORT' };
    case Opt.LIST: {
      if (data.length !== 0) return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, 'LIST takes no data')] };
      // Exports that need TLS are not named in clear.
      const replies = ctx.exports.list().filter((e) => !needsTls(e.name))
        .map((e) => encodeOptionReply(opt, Rep.SERVER, encodeRepServer(e.name, e.description)));
      state.listedExports = Math.max(state.listedExports, replies.length);
      replies.push(ack(opt));
      return { next: 'options', replies };
    }
    case Opt.STARTTLS:
      if (data.length !== 0) return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, 'STARTTLS takes no data')] };
      if (!tls || tls.mode === TlsMode.Off) return { next: 'options', replies: [err(opt, Rep.ERR_UNSUP, 'TLS is not configured on this server')] };
      if (tls.active) return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, 'TLS is already active')] };
      // Nothing negotiated in clear carries over into TLS ("STARTTLS").
      state.structuredReplies = false;
      state.metaContext = null;
      return { next: 'starttls', replies: [ack(opt)] };
    case Opt.INFO:
    case Opt.GO: {
      const req = decodeInfoRequest(data);
      if (req instanceof ProtocolError) return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, `malformed INFO/GO request: ${req.message}`)] };
      const exp = ctx.exports.lookup(req.name);
      if (!exp) return { next: 'options', replies: [err(opt, Rep.ERR_UNKNOWN, notServed(ctx, req.name))] };
      if (needsTls(exp.name)) return { next: 'options', replies: [err(opt, Rep.ERR_TLS_REQD, `export '${exp.name}' needs TLS: send STARTTLS first`)] };
      // We send every info type, asked or not (the Linux client asks for none).
      const replies = [
        encodeInfo({ type: Info.EXPORT, size: exp.device.size, flags: transmissionFlags(exp, state.structuredReplies) }),
        encodeInfo({ type: Info.NAME, name: exp.name }),
        encodeInfo({ type: Info.DESCRIPTION, description: exp.description }),
        encodeInfo({ type: Info.BLOCK_SIZE, minimum: MIN_BLOCK_SIZE, preferred: exp.device.preferredBlockSize, maximum: MAX_PAYLOAD }),
      ].map((payload) => encodeOptionReply(opt, Rep.INFO, payload));
      replies.push(ack(opt));
      if (opt === Opt.INFO) return { next: 'options', replies };
      return { next: 'transmission', replies, exportName: exp.name, baseAllocation: baseAllocationFor(state, req.name, exp) };
    }
    case Opt.STRUCTURED_REPLY:
      if (data.length !== 0) return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, 'STRUCTURED_REPLY takes no data')] };
      if (state.structuredReplies) return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, 'structured replies already negotiated')] };
      state.structuredReplies = true;
      return { next: 'options', replies: [ack(opt)] };
    case Opt.LIST_META_CONTEXT:
    case Opt.SET_META_CONTEXT:
      return metaContext(state, ctx, opt, data);
    default:
      // Includes EXTENDED_HEADERS: the codec has room for it, but no client here can test it.
      return { next: 'options', replies: [err(opt, Rep.ERR_UNSUP, `option ${opt} is not supported`)] };
  }
}

function baseAllocationFor(state: NegotiationState, requestedName: string, exp: ResolvedExport): boolean {
  const mc = state.metaContext;
  return mc !== null && mc.baseAllocation && (mc.exportName === requestedName || mc.exportName === exp.name);
}

function metaContext(state: NegotiationState, ctx: NegotiationContext, opt: number, data: Buffer): NegotiationResult {
  const isSet = opt === Opt.SET_META_CONTEXT;
  if (isSet) state.metaContext = null; // replaced even on failure
  if (!state.structuredReplies) {
    return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, 'meta contexts need structured replies first')] };
  }
  const req = decodeMetaContextRequest(data);
  if (req instanceof ProtocolError) return { next: 'options', replies: [err(opt, Rep.ERR_INVALID, `malformed meta context request: ${req.message}`)] };
  const exp = ctx.exports.lookup(req.exportName);
  if (!exp) return { next: 'options', replies: [err(opt, Rep.ERR_UNKNOWN, notServed(ctx, req.exportName))] };
  if (ctx.tls && !ctx.tls.active && ctx.tls.exportNeedsTls(exp.name)) {
    return { next: 'options', replies: [err(opt, Rep.ERR_TLS_REQD, `export '${exp.name}' needs TLS: send STARTTLS first`)] };
  }
  let match: boolean;
  if (req.queries.length === 0) match = !isSet; // LIST with no query lists all; SET selects none
  else match = req.queries.some((q) => q === META_CONTEXT_BASE_ALLOCATION || (!isSet && q === 'base:'));
  const replies: Buffer[] = [];
  if (match) replies.push(encodeOptionReply(opt, Rep.META_CONTEXT, encodeRepMetaContext(isSet ? BASE_ALLOCATION_ID : 0, META_CONTEXT_BASE_ALLOCATION)));
  replies.push(ack(opt));
  if (isSet) state.metaContext = { exportName: req.exportName, baseAllocation: match };
  return { next: 'options', replies };
}
