// TLS for NBD (spec "TLS support", "STARTTLS"): the modes, the material (X.509 certificate and key,
// CA and CRL for client certificates, a PSK file), loading it with one-line errors, and upgrading
// a session's socket in place after NBD_OPT_STARTTLS. The session keeps the returned TLSSocket.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';

/** off: STARTTLS refused; on: offered, plain clients served too; require: nothing but STARTTLS in clear. */
export const TlsMode = { Off: 'off', On: 'on', Require: 'require' } as const;
export type TlsMode = (typeof TlsMode)[keyof typeof TlsMode];

export function isTlsMode(s: string): s is TlsMode {
  return s === TlsMode.Off || s === TlsMode.On || s === TlsMode.Require;
}

/** TLS 1.3 preferred, 1.2 accepted, nothing older. */
export const TLS_MIN_VERSION = 'TLSv1.2';
/** A TLS handshake (after our STARTTLS ACK) must finish within this, or the connection closes. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * The TLS socket's writable high-water mark: a turn's replies over TLS stay queued until a later
 * turn (the TLS write completes from a native immediate), so with Node's 16 KiB default four 4 KiB
 * read replies made `write()` say "full" and the session stopped and restarted reading for every
 * batch. Queued replies are charged to the memory budget until they leave, so this adds no
 * unaccounted memory (bench/README.md, "TLS: the reply queue's high-water mark, and the
 * disk-read look").
 */
export const TLS_WRITE_HIGH_WATER_MARK = 256 * 1024;
/** PSK keys: at least 128 bits (psktool makes 256). */
export const PSK_MIN_BYTES = 16;

export interface TlsFiles {
  cert?: string | undefined;
  key?: string | undefined;
  ca?: string | undefined;
  crl?: string | undefined;
  psk?: string | undefined;
}

export class TlsConfigError extends Error {}

/** Loaded, checked material: what each upgrade uses. Replaced as a whole on reload. */
export interface TlsMaterial {
  readonly files: TlsFiles;
  readonly context: tls.SecureContext;
  /** Client certificates are asked for and must chain to the CA (and not be revoked). */
  readonly verifyClients: boolean;
  /** PSK identity -> key, when --tls-psk is given. */
  readonly psk: ReadonlyMap<string, Buffer> | null;
  /** The checked --tls-cert and --tls-key text: the web console serves HTTPS with it. */
  readonly serverPem: { cert: string; key: string } | null;
}

/** Who is on the other end, as access rules and logs see it. */
export interface TlsPeer {
  /** 'TLSv1.3' or 'TLSv1.2'. */
  version: string;
  /** Certificate subject CN and SAN names (DNS, email, URI, IP), or the PSK identity. */
  names: string[];
  psk: string | null;
}

function readText(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new TlsConfigError(`--${flag} ${path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** `identity:hexkey` per line (psktool, nbdkit, qemu); blank lines and # comments skipped. */
export function parsePskFile(text: string, path: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^([^:]+):([0-9a-fA-F]+)$/.exec(line);
    if (!m || m[2]!.length % 2 !== 0) throw new TlsConfigError(`--tls-psk ${path}:${i + 1}: not IDENTITY:HEXKEY`);
    const key = Buffer.from(m[2]!, 'hex');
    if (key.length < PSK_MIN_BYTES) throw new TlsConfigError(`--tls-psk ${path}:${i + 1}: key shorter than ${PSK_MIN_BYTES} bytes`);
    out.set(m[1]!, key);
  });
  if (out.size === 0) throw new TlsConfigError(`--tls-psk ${path}: no IDENTITY:HEXKEY line`);
  return out;
}

/** Reads and checks every file; throws TlsConfigError with one line saying what is wrong. */
export function loadTlsMaterial(files: TlsFiles, now = new Date()): TlsMaterial {
  if ((files.cert === undefined) !== (files.key === undefined)) throw new TlsConfigError('--tls-cert and --tls-key go together');
  if (files.cert === undefined && files.psk === undefined) throw new TlsConfigError('TLS needs --tls-cert and --tls-key, or --tls-psk');
  if (files.ca === undefined && files.crl !== undefined) throw new TlsConfigError('--tls-crl needs --tls-ca');
  const opts: tls.SecureContextOptions = { minVersion: TLS_MIN_VERSION };
  let serverPem: TlsMaterial['serverPem'] = null;
  if (files.cert !== undefined && files.key !== undefined) {
    const cert = readText('tls-cert', files.cert);
    const key = readText('tls-key', files.key);
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(cert);
    } catch {
      throw new TlsConfigError(`--tls-cert ${files.cert}: no PEM certificate`);
    }
    try {
      if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new TlsConfigError(`--tls-key ${files.key} does not match the certificate in ${files.cert}`);
    } catch (e) {
      if (e instanceof TlsConfigError) throw e;
      throw new TlsConfigError(`--tls-key ${files.key}: no PEM private key`);
    }
    if (new Date(leaf.validTo) < now) throw new TlsConfigError(`--tls-cert ${files.cert}: certificate expired on ${new Date(leaf.validTo).toISOString()}`);
    if (new Date(leaf.validFrom) > now) throw new TlsConfigError(`--tls-cert ${files.cert}: certificate not valid before ${new Date(leaf.validFrom).toISOString()}`);
    opts.cert = cert;
    opts.key = key;
    serverPem = { cert, key };
  }
  if (files.ca !== undefined) {
    const ca = readText('tls-ca', files.ca);
    try {
      new X509Certificate(ca);
    } catch {
      throw new TlsConfigError(`--tls-ca ${files.ca}: no PEM certificate`);
    }
    opts.ca = ca;
  }
  if (files.crl !== undefined) opts.crl = readText('tls-crl', files.crl);
  const psk = files.psk === undefined ? null : parsePskFile(readText('tls-psk', files.psk), files.psk);
  // PSK needs PSK cipher suites in TLS 1.2; TLS 1.3 suites work with any key exchange.
  if (psk) opts.ciphers = `${files.cert ? `${tls.DEFAULT_CIPHERS}:` : ''}ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256`;
  let context: tls.SecureContext;
  try {
    context = tls.createSecureContext(opts);
  } catch (e) {
    throw new TlsConfigError(`TLS material rejected by OpenSSL: ${(e as Error).message}`);
  }
  return { files, context, verifyClients: files.ca !== undefined, psk, serverPem };
}

export interface TlsUpgrade {
  socket: tls.TLSSocket;
  /** Resolves with the peer once the handshake is done; rejects with its error. */
  ready: Promise<TlsPeer>;
}

/** Wraps `raw` (our STARTTLS ACK already written) as the server side of a TLS handshake. */
export function upgradeToTls(raw: Duplex, material: TlsMaterial): TlsUpgrade {
  let pskIdentity: string | null = null;
  const options: tls.TLSSocketOptions = {
    isServer: true,
    secureContext: material.context,
    requestCert: material.verifyClients,
    rejectUnauthorized: material.verifyClients,
  };
  if (material.psk) {
    const keys = material.psk;
    // A TLSSocket option since Node 12, missing from @types/node's TLSSocketOptions.
    (options as { pskCallback?: (s: tls.TLSSocket, identity: string) => Buffer | null }).pskCallback = (_socket, identity) => {
      const key = keys.get(identity);
      if (key) pskIdentity = identity;
      return key ?? null;
    };
  }
  const socket = new tls.TLSSocket(raw, options);
  raiseWriteHighWaterMark(socket, TLS_WRITE_HIGH_WATER_MARK);
  const ready = new Promise<TlsPeer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`TLS handshake not done within ${TLS_HANDSHAKE_TIMEOUT_MS} ms`)), TLS_HANDSHAKE_TIMEOUT_MS);
    socket.once('secure', () => {
      clearTimeout(timer);
      // Expired, revoked, unknown issuer: OpenSSL lets the handshake finish and records why.
      const refused = material.verifyClients && pskIdentity === null ? verifyError(socket) : null;
      if (refused !== null) {
        reject(new Error(`client certificate refused: ${refused}`));
        socket.destroy();
        return;
      }
      resolve({ version: socket.getProtocol() ?? 'unknown', names: pskIdentity !== null ? [pskIdentity] : certNames(socket), psk: pskIdentity });
    });
    socket.once('error', (e) => { clearTimeout(timer); reject(e); });
    socket.once('close', () => { clearTimeout(timer); reject(new Error('closed during the TLS handshake')); });
  });
  ready.catch(() => undefined); // the session awaits it; never an unhandled rejection
  return { socket, ready };
}

/**
 * TLSSocket passes one highWaterMark to both sides; the readable side's would let a paused
 * connection buffer that much more decrypted input outside the budget, so only the writable
 * side's is raised (its state's field: Writable offers no setter). Without that field, the default stays.
 */
export function raiseWriteHighWaterMark(socket: Duplex, bytes: number): void {
  const state = (socket as unknown as { _writableState?: { highWaterMark?: unknown } })._writableState;
  if (state && typeof state.highWaterMark === 'number' && state.highWaterMark < bytes) state.highWaterMark = bytes;
}

/**
 * OpenSSL's verdict on the client's certificate chain (dates, CA, CRL), null when it passed. Node
 * checks it only for sockets a tls.Server accepted (its secure-connection handler); ours
 * is upgraded in place after STARTTLS, so we ask the TLS handle the same question. Without that
 * handle method, nothing is trusted.
 */
function verifyError(socket: tls.TLSSocket): string | null {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } })._handle;
  if (typeof handle?.verifyError !== 'function') return 'cannot verify (no TLS handle)';
  const e = handle.verifyError();
  if (e) return e.code ?? e.message;
  return socket.getPeerCertificate() && Object.keys(socket.getPeerCertificate()).length > 0 ? null : 'no certificate';
}

/** Subject CN, then SAN entries without their type prefix. */
function certNames(socket: tls.TLSSocket): string[] {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return [];
  const names: string[] = [];
  const cn = cert.subject?.CN;
  if (typeof cn === 'string') names.push(cn);
  else if (Array.isArray(cn)) names.push(...(cn as string[]));
  for (const entry of (cert.subjectaltname ?? '').split(', ')) {
    const m = /^(?:DNS|email|URI|IP Address):(.+)$/.exec(entry);
    if (m && !names.includes(m[1]!)) names.push(m[1]!);
  }
  return names;
}
