// NBD wire constants (the upstream NBD protocol specification; our contract is protocol/nbd.md).
// `as const` tables plus union types; nameOf() turns a value back into its name for logs.

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Extended headers (not negotiable yet: no client here speaks them). */
export const EXTENDED_REQUEST_MAGIC = 0x21e41c71;
export const EXTENDED_REPLY_MAGIC = 0x6e8a278c;

export const HandshakeFlag = { FixedNewstyle: 1 << 0, NoZeroes: 1 << 1 } as const;
export const ClientFlag = { FixedNewstyle: 1 << 0, NoZeroes: 1 << 1 } as const;

export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;
export type Opt = (typeof Opt)[keyof typeof Opt];

export const REP_ERROR_BIT = 0x80000000;
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
  ERR_EXT_HEADER_REQD: 0x8000000a,
} as const;
export type Rep = (typeof Rep)[keyof typeof Rep];

export const Info = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;
export type Info = (typeof Info)[keyof typeof Info];

export const TxFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;
export type Cmd = (typeof Cmd)[keyof typeof Cmd];

export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

export const ReplyFlag = { DONE: 1 << 0 } as const;
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** NBD errno values (spec "Error values"). */
export const NbdErrno = {
  OK: 0,
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrno = (typeof NbdErrno)[keyof typeof NbdErrno];

/** `base:allocation` state bits. */
export const StateFlag = { HOLE: 1 << 0, ZERO: 1 << 1 } as const;
export const META_CONTEXT_BASE_ALLOCATION = 'base:allocation';
/** The id we hand out for base:allocation in REP_META_CONTEXT. */
export const BASE_ALLOCATION_ID = 1;

// Sizes of fixed wire structures.
export const GREETING_LEN = 18; // NBDMAGIC(8) IHAVEOPT(8) flags(2)
export const CLIENT_FLAGS_LEN = 4;
export const OPTION_HEADER_LEN = 16; // IHAVEOPT(8) opt(4) len(4)
export const OPTION_REPLY_HEADER_LEN = 20; // magic(8) opt(4) type(4) len(4)
export const REQUEST_HEADER_LEN = 28;
export const SIMPLE_REPLY_LEN = 16;
export const STRUCTURED_REPLY_HEADER_LEN = 20;
export const EXPORT_NAME_REPLY_LEN = 10; // size(8) flags(2), then 124 zero bytes unless NO_ZEROES
export const EXPORT_NAME_ZEROES = 124;

// Limits (named, as nbdkit's MAX_NR_OPTIONS and friends).
// The handshake's abuse guards. None is a bare option count: `nbdinfo --list` sends LIST and then
// two options per export, and every snapshot here is an export (thousands on one server).
/** Options allowed before any LIST (nbdkit's MAX_NR_OPTIONS); a LIST raises the allowance. */
export const MAX_OPTIONS = 32;
/** Further options allowed per export the largest LIST reply named (nbdinfo uses 2: INFO, LIST_META_CONTEXT). */
export const OPTIONS_PER_LISTED_EXPORT = 4;
/** Option bytes (headers included) one handshake may send. */
export const MAX_HANDSHAKE_OPTION_BYTES = 16 * 1024 * 1024;
/** Option reply bytes one handshake may cost us (a LIST of 3,300 exports is about 0.4 MiB). */
export const MAX_HANDSHAKE_REPLY_BYTES = 64 * 1024 * 1024;
/** Largest option payload we accept (nbdkit uses 64 MiB; ours carry names and queries only). */
export const MAX_OPTION_LEN = 64 * 1024;
/** Longest export name or meta context string (spec: strings <= 4096 bytes). */
export const MAX_STRING_LEN = 4096;
/** Meta context queries in one option. */
export const MAX_META_QUERIES = 128;
/** Largest READ/WRITE payload we advertise (NBD_INFO_BLOCK_SIZE maximum; the kernel client sends up to 32 MiB). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/**
 * Largest READ/WRITE payload we serve, whatever we advertised: liberal in what we accept, as the
 * reference server and nbdkit are (the reference project's test client sends ~48 MiB).
 */
export const MAX_REQUEST = 64 * 1024 * 1024;
/** Largest unfragmented read a DF request is served (spec: >= 64 KiB). */
export const MAX_DF_READ = MAX_REQUEST;
/** Block status descriptors in one reply (spec: SHOULD <= 2^20). */
export const MAX_BLOCK_STATUS_EXTENTS = 1 << 16;

function invert<T extends Record<string, number>>(table: T): Map<number, string> {
  return new Map(Object.entries(table).map(([k, v]) => [v, k]));
}
const OPT_NAMES = invert(Opt);
const CMD_NAMES = invert(Cmd);
const ERRNO_NAMES = invert(NbdErrno);

export const nameOfOpt = (v: number): string => OPT_NAMES.get(v) ?? `OPT_${v}`;
export const nameOfCmd = (v: number): string => CMD_NAMES.get(v) ?? `CMD_${v}`;
export const nameOfErrno = (v: number): string => ERRNO_NAMES.get(v) ?? `ERRNO_${v}`;
