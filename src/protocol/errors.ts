// Three kinds of error: a ProtocolError closes the connection; a RequestError is
// answered with an NBD errno and the session goes on; a storage fault (StorageError, or any
// other exception from the device) is logged with its cause and mapped to an errno.
import { CmdFlag, NbdErrno } from './constants.ts';

/**
 * Why bytes could not be decoded. Every decoder returns its value or a ProtocolError with one of
 * these; the session closes the connection on one from the client, negotiate() answers
 * NBD_REP_ERR_INVALID for a malformed option payload. (Refusals that are not decode failures, such
 * as unknown client flags or too many options, are negotiate()'s close reasons.)
 */
export type ProtocolErrorCode =
  /** A message's magic number is wrong: the peer is not speaking NBD or has lost framing. */
  | 'NBD_ERR_BAD_MAGIC'
  /** A message is cut short, or its lengths and counts disagree with its size. */
  | 'NBD_ERR_MALFORMED'
  /** An option announces more data than MAX_OPTION_LEN. */
  | 'NBD_ERR_OPTION_TOO_LONG';

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

/** A decode failure other than a bad magic. */
export function malformed(message: string): ProtocolError {
  return new ProtocolError('NBD_ERR_MALFORMED', message);
}

/** The decoded value, or the ProtocolError thrown (raw clients and tests, which trust their peer). */
export function orThrow<T>(r: T | ProtocolError): T {
  if (r instanceof ProtocolError) throw r;
  return r;
}

export class RequestError extends Error {
  readonly errno: NbdErrno;
  constructor(errno: NbdErrno, message: string) {
    super(message);
    this.name = 'RequestError';
    this.errno = errno;
  }
}

/**
 * Maps any failure of a request to the errno the client sees (nbdkit's nbd_errno()): EOVERFLOW
 * only when the client asked for DF, ENOTSUP only for FAST_ZERO, EIO for unknown storage faults.
 */
export function toNbdErrno(e: unknown, cmdFlags: number): NbdErrno {
  if (e instanceof RequestError) return e.errno;
  // StorageError carries a symbolic errno; Node's fs errors carry a numeric errno and the
  // symbolic name in `code`.
  let code: unknown;
  if (typeof e === 'object' && e !== null) {
    const { errno, code: sym } = e as { errno?: unknown; code?: unknown };
    code = typeof errno === 'string' ? errno : sym;
  }
  switch (code) {
    case 'EROFS':
    case 'EPERM':
    case 'EACCES':
      return NbdErrno.EPERM;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NbdErrno.ENOSPC;
    case 'ENOMEM':
      return NbdErrno.ENOMEM;
    case 'EINVAL':
      return NbdErrno.EINVAL;
    case 'ESHUTDOWN':
      return NbdErrno.ESHUTDOWN;
    case 'EOVERFLOW':
      return cmdFlags & CmdFlag.DF ? NbdErrno.EOVERFLOW : NbdErrno.EINVAL;
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return cmdFlags & CmdFlag.FAST_ZERO ? NbdErrno.ENOTSUP : NbdErrno.EINVAL;
    default:
      return NbdErrno.EIO;
  }
}
