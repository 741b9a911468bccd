// Three kinds of error: a ProtocolError closes the connection; a RequestError is
// answered with an NBD errno and the session goes on; a storage fault (StorageError, or any
// other exception from the device) is logged with its cause and mapped to an errno.
import { CmdFlag, NbdErrno } from './constants.ts';

export type ProtocolErrorCode =
  | 'NBD_ERR_BAD_MAGIC'
  | 'NBD_ERR_BAD_CLIENT_FLAGS'
  | 'NBD_ERR_TOO_MANY_OPTIONS'
  | 'NBD_ERR_OPTION_TOO_LONG'
  | 'NBD_ERR_PAYLOAD_TOO_LARGE'
  | 'NBD_ERR_NOT_FIXED_NEWSTYLE'
  | 'NBD_ERR_UNKNOWN_EXPORT'
  | 'NBD_ERR_HANDSHAKE_TIMEOUT';

export class ProtocolError extends Error {
  readonly code: ProtocolErrorCode;
  constructor(code: ProtocolErrorCode, message: string) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
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
