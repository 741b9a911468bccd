// Control-socket errors: JSON-RPC 2.0's own codes for envelope problems, one application code
// (-32000) for everything the operation itself refused, with the stable reason in
// `error.data.code` (the codes of the store, backups, streams and schedules, each a CodedError, so
// scripts match on one vocabulary).
import { StorageError, UncommittedChangeError } from '../storage/device.ts';
import { CodedError } from '../util/coded-error.ts';

export const RpcCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** Every application error; the reason is in error.data.code. */
  ApplicationError: -32000,
} as const;
export type RpcCode = (typeof RpcCode)[keyof typeof RpcCode];

/** `error.data.code` values beyond the store's (which are passed through as they are). */
export const ControlErrorCode = {
  ParseError: 'PARSE_ERROR',
  InvalidRequest: 'INVALID_REQUEST',
  LineTooLong: 'LINE_TOO_LONG',
  MethodNotFound: 'METHOD_NOT_FOUND',
  InvalidParams: 'INVALID_PARAMS',
  Internal: 'INTERNAL',
  NoSpace: 'NO_SPACE',
  IoError: 'IO_ERROR',
  /** A method over a service this server does not run (the scheduler). */
  NotSupported: 'NOT_SUPPORTED',
} as const;

export interface RpcErrorObject {
  code: number;
  message: string;
  data: { code: string; [k: string]: unknown };
}

/** Thrown inside the control layer; becomes one error response. */
export class RpcError extends Error {
  readonly rpcCode: number;
  readonly dataCode: string;
  readonly extra: Record<string, unknown>;
  constructor(rpcCode: number, dataCode: string, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = 'RpcError';
    this.rpcCode = rpcCode;
    this.dataCode = dataCode;
    this.extra = extra;
  }

  toObject(): RpcErrorObject {
    return { code: this.rpcCode, message: this.message, data: { code: this.dataCode, ...this.extra } };
  }
}

export function invalidParams(message: string, param?: string): RpcError {
  return new RpcError(RpcCode.InvalidParams, ControlErrorCode.InvalidParams, message, param === undefined ? {} : { param });
}

/** Any error a method threw, as the peer sees it. Unknown errors say only "internal error". */
export function toRpcError(e: unknown): RpcError {
  if (e instanceof RpcError) return e;
  // A refusal with a stable code (store, backup, stream, import, schedule): the code as it is.
  if (e instanceof CodedError) return new RpcError(RpcCode.ApplicationError, e.code, e.message);
  if (e instanceof StorageError) {
    // `applied`: the change happened and is kept; only its durability is pending (see protocol/control.md).
    const extra = e instanceof UncommittedChangeError ? { applied: true } : {};
    if (e.errno === 'ENOSPC' || e.errno === 'EDQUOT' || e.errno === 'EFBIG') {
      return new RpcError(RpcCode.ApplicationError, ControlErrorCode.NoSpace, `no space left: ${e.message}`, extra);
    }
    return new RpcError(RpcCode.ApplicationError, ControlErrorCode.IoError, `storage error ${e.errno}: ${e.message}`, extra);
  }
  const errno = (e as { code?: unknown } | null)?.code;
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    return new RpcError(RpcCode.ApplicationError, ControlErrorCode.NoSpace, 'no space left on the data dir\'s filesystem');
  }
  return new RpcError(RpcCode.InternalError, ControlErrorCode.Internal, 'internal error (see the server log)');
}
