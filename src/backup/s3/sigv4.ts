// AWS Signature Version 4 for S3 requests (header form), pure: no I/O, no clock. The payload is
// always signed by its real SHA-256 (never UNSIGNED-PAYLOAD), so a body changed on the way is
// refused by the server. Follows the steps of the AWS SigV4 documentation: canonical request,
// string to sign, derived key, signature.
import { createHash, createHmac } from 'node:crypto';

export const SIGV4_ALGORITHM = 'AWS4-HMAC-SHA256';
export const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface SignInput {
  method: string;
  /** The path as sent, already URI-encoded (see encodePath). */
  path: string;
  /** Query parameters, unencoded; a value of '' for a bare `?uploads`. */
  query: Record<string, string>;
  /** Headers to sign (host must be among them); names in any case. */
  headers: Record<string, string>;
  payloadSha256: string;
  /** `YYYYMMDDTHHMMSSZ`. */
  amzDate: string;
  region: string;
  service: string;
  credentials: Credentials;
}

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

/** RFC 3986 encoding as SigV4 wants it: unreserved characters stay, everything else %XX. */
export function uriEncode(s: string, keepSlash = false): string {
  let out = '';
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === '/')) out += c;
    else out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** An object path `/bucket/key` encoded once (S3 does not double-encode). */
export function encodePath(path: string): string {
  return uriEncode(path, true);
}

export function canonicalQuery(query: Record<string, string>): string {
  return Object.entries(query)
    .map(([k, v]) => [uriEncode(k), uriEncode(v)] as const)
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
}

function canonicalHeaders(headers: Record<string, string>): { text: string; signed: string } {
  const entries = Object.entries(headers)
    .map(([k, v]) => [k.toLowerCase(), v.trim().replace(/\s+/g, ' ')] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return {
    text: entries.map(([k, v]) => `${k}:${v}\n`).join(''),
    signed: entries.map(([k]) => k).join(';'),
  };
}

export function canonicalRequest(input: SignInput): { request: string; signedHeaders: string } {
  const h = canonicalHeaders(input.headers);
  const request = [input.method, input.path, canonicalQuery(input.query), h.text, h.signed, input.payloadSha256].join('\n');
  return { request, signedHeaders: h.signed };
}

export function signingKey(secret: string, date: string, region: string, service: string): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), 'aws4_request');
}

/** The Authorization header value for the request. */
export function authorization(input: SignInput): string {
  const date = input.amzDate.slice(0, 8);
  const scope = `${date}/${input.region}/${input.service}/aws4_request`;
  const { request, signedHeaders } = canonicalRequest(input);
  const toSign = [SIGV4_ALGORITHM, input.amzDate, scope, sha256Hex(request)].join('\n');
  const signature = createHmac('sha256', signingKey(input.credentials.secretAccessKey, date, input.region, input.service))
    .update(toSign).digest('hex');
  return `${SIGV4_ALGORITHM} Credential=${input.credentials.accessKeyId}/${scope},SignedHeaders=${signedHeaders},Signature=${signature}`;
}

/** `YYYYMMDDTHHMMSSZ` of a Date. */
export function amzDate(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}
