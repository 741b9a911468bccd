// The console's login token: 32 random bytes (base64url) in DATA_DIR/console.token, mode 0600,
// created on the first start with --http and kept across restarts. The file is the secret: a
// link, a symlink or a file others may read is refused rather than trusted or rewritten.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, lstatSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export const TOKEN_FILE = 'console.token';
export const TOKEN_BYTES = 32;
export const TOKEN_MODE = 0o600;
/** base64url of TOKEN_BYTES bytes, no padding. */
export const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export function tokenPath(dataDir: string): string {
  return join(dataDir, TOKEN_FILE);
}

/** The token in the data dir, created when missing. Throws with the reason when the file is unfit. */
export function loadOrCreateToken(dataDir: string): { token: string; created: boolean } {
  const path = tokenPath(dataDir);
  let fd: number;
  try {
    fd = openSync(path, 'wx', TOKEN_MODE); // O_EXCL: never follows or overwrites anything
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return { token: readToken(dataDir), created: false };
  }
  const token = randomBytes(TOKEN_BYTES).toString('base64url');
  try {
    writeSync(fd, `${token}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return { token, created: true };
}

/** The existing token (for `snapnbd console url` and restarts). */
export function readToken(dataDir: string): string {
  const path = tokenPath(dataDir);
  const st = lstatSync(path);
  if (!st.isFile()) throw new Error(`${path} is not a regular file; delete it to get a new console token`);
  if ((st.mode & 0o077) !== 0) {
    throw new Error(`${path} may be read by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it, or delete it to get a new token`);
  }
  const token = readFileSync(path, 'utf8').trim();
  if (!TOKEN_PATTERN.test(token)) throw new Error(`${path} does not hold a console token; delete it to get a new one`);
  return token;
}

/** Constant-time comparison (hashing first makes the lengths equal). */
export function tokenMatches(expected: string, presented: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(presented).digest();
  return timingSafeEqual(a, b);
}

/**
 * The login link for a console listening on `address` (`HOST:PORT` as the server prints it). The
 * token rides in the fragment, which browsers never send to a server nor put in a Referer. A
 * wildcard address becomes the loopback one, which reaches it from this host.
 */
export function loginUrl(address: string, token: string, scheme: 'http' | 'https' = 'http'): string {
  const where = address.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
  return `${scheme}://${where}/#token=${token}`;
}
