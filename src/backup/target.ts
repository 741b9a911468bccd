// A backup target: a flat namespace of immutable objects under one prefix. Two kinds share the
// layout and the guarantees (src/backup/README.md): `s3://BUCKET/PREFIX` (any S3 endpoint, the
// AWS CLI's configuration) and `file:///ABSOLUTE/DIR` (a mounted disk or NAS). Options ride in
// the URL's query: `?encrypt=/path/keyfile`, `?upload-limit=RATE` (bytes per second, `20M`).
import { isAbsolute } from 'node:path';
import { parseSize } from '../util/size.ts';
import { BackupError, BackupErrorCode } from './errors.ts';

export interface ObjectEntry {
  key: string;
  size: number;
  lastModified: Date;
}

export interface ObjectStore {
  /** How to name the target in messages: the URL without credentials or options. */
  readonly display: string;
  /**
   * `signal` aborts a request in flight (a cancelled job). `sha256`: the hex SHA-256 of `data`
   * when the caller knows it (a plain block's name), so the store need not hash it again.
   */
  put(key: string, data: Buffer, signal?: AbortSignal, sha256?: string): Promise<void>;
  /**
   * null when the object does not exist. With `into`, an object that fits is read into it and
   * the answer is a view of it (no allocation per object); a larger one comes in a new Buffer.
   */
  get(key: string, signal?: AbortSignal, into?: Buffer): Promise<Buffer | null>;
  exists(key: string, signal?: AbortSignal): Promise<boolean>;
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, in key order. */
  list(prefix: string): AsyncIterable<ObjectEntry>;
  /** Fails clearly (TARGET_NOT_FOUND, TARGET_DENIED) when the target cannot be used. */
  check(): Promise<void>;
  close(): void;
}

export interface TargetSpec {
  kind: 's3' | 'file';
  /** s3: the bucket; file: the directory. */
  location: string;
  /** s3: the key prefix, '' or ending in '/'. */
  prefix: string;
  /** Path of the key file, when the target is encrypted. */
  keyFile: string | null;
  /** Bytes per second that uploads to the target may use at most (null: no limit). */
  uploadLimit: number | null;
  display: string;
}

/** The slowest `upload-limit` accepted: at it, one 1 MiB block takes 16 s to send. */
export const MIN_UPLOAD_LIMIT = 64 * 1024;

const BUCKET_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function parseTargetUrl(url: string): TargetSpec {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new BackupError(BackupErrorCode.InvalidTarget, `target '${url}' is not s3://BUCKET/PREFIX or file:///DIR`);
  }
  if (u.username || u.password) throw new BackupError(BackupErrorCode.InvalidTarget, 'a target URL must not carry credentials (use the AWS variables or profile)');
  let keyFile: string | null = null;
  let uploadLimit: number | null = null;
  for (const [k, v] of u.searchParams) {
    if (k === 'encrypt') {
      if (!isAbsolute(v)) throw new BackupError(BackupErrorCode.InvalidTarget, `encrypt=: key file '${v}' must be an absolute path`);
      keyFile = v;
    } else if (k === 'upload-limit') {
      const n = parseSize(v);
      if (n === null || n < MIN_UPLOAD_LIMIT) {
        throw new BackupError(BackupErrorCode.InvalidTarget, `upload-limit=: '${v}' is not a rate of at least ${MIN_UPLOAD_LIMIT / 1024}K (bytes per second, e.g. 20M)`);
      }
      uploadLimit = n;
    } else {
      throw new BackupError(BackupErrorCode.InvalidTarget, `target option '${k}' is unknown (known: encrypt, upload-limit)`);
    }
  }
  if (u.protocol === 's3:') {
    if (!BUCKET_PATTERN.test(u.hostname)) throw new BackupError(BackupErrorCode.InvalidTarget, `'${u.hostname}' is not a valid bucket name`);
    const p = decodeURIComponent(u.pathname).replace(/^\/+/, '');
    const prefix = p === '' ? '' : p.replace(/\/*$/, '/');
    return { kind: 's3', location: u.hostname, prefix, keyFile, uploadLimit, display: `s3://${u.hostname}/${prefix}` };
  }
  if (u.protocol === 'file:') {
    if (u.hostname !== '') throw new BackupError(BackupErrorCode.InvalidTarget, `file target '${url}' must be file:///ABSOLUTE/DIR`);
    const dir = decodeURIComponent(u.pathname).replace(/\/+$/, '') || '/';
    return { kind: 'file', location: dir, prefix: '', keyFile, uploadLimit, display: `file://${dir}` };
  }
  throw new BackupError(BackupErrorCode.InvalidTarget, `target '${url}': scheme must be s3: or file:`);
}

/** `NAME=URL` of `serve --backup-target`. */
export function parseTargetArg(arg: string): { name: string; spec: TargetSpec } {
  const m = /^([A-Za-z0-9_][A-Za-z0-9._-]{0,63})=(.+)$/.exec(arg);
  if (!m) throw new BackupError(BackupErrorCode.InvalidTarget, `'${arg}' is not NAME=URL (e.g. offsite=s3://bucket/snapnbd)`);
  return { name: m[1]!, spec: parseTargetUrl(m[2]!) };
}
