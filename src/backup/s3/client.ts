// A small S3 client on node:http/https: path-style requests signed with SigV4 (real payload
// hash), keep-alive sockets, at most `concurrency` requests in flight, and retries with
// exponential backoff and full jitter on 5xx, SlowDown, resets, timeouts and short bodies.
// Errors name the bucket, key and endpoint; credentials appear in no message or log. A GET into a
// caller's buffer on an http: endpoint goes over raw-get.ts (the body read in place).
import http from 'node:http';
import https from 'node:https';
import { BackupError, BackupErrorCode } from '../errors.ts';
import type { S3Config } from './config.ts';
import { amzDate, authorization, encodePath, canonicalQuery, sha256Hex, EMPTY_SHA256 } from './sigv4.ts';
import { xmlText, xmlBlocks } from './xml.ts';
import { ERROR_BODY_MAX, RawGetter, RawUnsupported } from './raw-get.ts';

export const S3_CONCURRENCY_DEFAULT = 16;
export const S3_ATTEMPTS_DEFAULT = 6;
export const S3_BACKOFF_BASE_MS = 100;
export const S3_BACKOFF_MAX_MS = 5_000;
/** No byte for this long: the request is abandoned (and retried). */
export const S3_IDLE_TIMEOUT_MS = 30_000;
/** Objects above this go up in parts; parts are this size (S3's minimum part is 5 MiB). */
export const MULTIPART_THRESHOLD = 64 * 1024 * 1024;
export const MULTIPART_PART_BYTES = 16 * 1024 * 1024;
export const LIST_PAGE_MAX = 1000;

export interface S3ClientOptions {
  concurrency?: number;
  attempts?: number;
  idleTimeoutMs?: number;
  /** Tests use small values to exercise paging and multipart cheaply. */
  listPageSize?: number;
  multipartThreshold?: number;
  partBytes?: number;
  /** false: every request through node:http (tests compare the two transports). */
  rawGet?: boolean;
  /** Called before each retry (tests count them; the log says why). */
  onRetry?: (what: string, attempt: number, cause: string) => void;
}

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date;
}

interface Req {
  method: 'GET' | 'PUT' | 'HEAD' | 'DELETE' | 'POST';
  bucket: string;
  key?: string;
  query?: Record<string, string>;
  body?: Buffer;
  /** The body's hex SHA-256, when known. */
  bodySha256?: string | undefined;
  /** Where a 2xx response body that fits goes (no chunk list, no concatenation). */
  into?: Buffer | undefined;
  headers?: Record<string, string>;
  /** Aborts the request in flight and stops retrying (a cancelled job). */
  signal?: AbortSignal | undefined;
}

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A failure worth retrying (network, 5xx, throttling). */
class Transient extends Error {}

export class S3Client {
  readonly config: S3Config;
  private readonly agent: http.Agent;
  private readonly concurrency: number;
  private readonly attempts: number;
  private readonly idleTimeoutMs: number;
  private readonly onRetry: S3ClientOptions['onRetry'];
  private readonly listPageSize: number;
  private readonly multipartThreshold: number;
  private readonly partBytes: number;
  /** Plain-HTTP endpoints: GETs into a buffer use it (raw-get.ts); null for https or once refused. */
  private raw: RawGetter | null;
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(config: S3Config, opts: S3ClientOptions = {}) {
    this.config = config;
    this.concurrency = opts.concurrency ?? S3_CONCURRENCY_DEFAULT;
    this.attempts = opts.attempts ?? S3_ATTEMPTS_DEFAULT;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? S3_IDLE_TIMEOUT_MS;
    this.onRetry = opts.onRetry;
    this.listPageSize = opts.listPageSize ?? LIST_PAGE_MAX;
    this.multipartThreshold = opts.multipartThreshold ?? MULTIPART_THRESHOLD;
    this.partBytes = opts.partBytes ?? MULTIPART_PART_BYTES;
    const agentOpts = { keepAlive: true, maxSockets: this.concurrency };
    this.agent = config.endpoint.protocol === 'https:' ? new https.Agent(agentOpts) : new http.Agent(agentOpts);
    const ep = config.endpoint;
    this.raw = ep.protocol === 'http:' && opts.rawGet !== false ? new RawGetter(ep.hostname.replace(/^\[|\]$/g, ''), Number(ep.port || 80), this.concurrency) : null;
  }

  /** scheme://host[:port], never userinfo. */
  get endpointName(): string {
    return this.config.endpoint.origin;
  }

  close(): void {
    this.agent.destroy();
    this.raw?.close();
  }

  /** `sha256`: the body's hex SHA-256 when the caller has it already (signed as is, not recomputed). */
  async put(bucket: string, key: string, body: Buffer, signal?: AbortSignal, sha256?: string): Promise<void> {
    if (body.length > this.multipartThreshold) return this.putMultipart(bucket, key, body, signal);
    await this.call({ method: 'PUT', bucket, key, body, bodySha256: sha256, signal });
  }

  /**
   * The object's bytes; null when it does not exist. A body that fits `into` (by its
   * Content-Length) is received straight into it, and the answer is a view of `into`.
   */
  async get(bucket: string, key: string, signal?: AbortSignal, into?: Buffer): Promise<Buffer | null> {
    const r = await this.call({ method: 'GET', bucket, key, signal, into }, [404]);
    return r.status === 404 ? null : r.body;
  }

  async head(bucket: string, key: string, signal?: AbortSignal): Promise<{ size: number } | null> {
    const r = await this.call({ method: 'HEAD', bucket, key, signal }, [404]);
    return r.status === 404 ? null : { size: Number(r.headers['content-length'] ?? 0) };
  }

  async delete(bucket: string, key: string): Promise<void> {
    await this.call({ method: 'DELETE', bucket, key }, [404]);
  }

  /** Fails clearly when the bucket is missing or the credentials are refused. */
  async checkBucket(bucket: string): Promise<void> {
    await this.call({ method: 'GET', bucket, query: { 'list-type': '2', 'max-keys': '1' } });
  }

  /** Every object under `prefix`, in key order, following continuation tokens. */
  async *list(bucket: string, prefix: string): AsyncGenerator<ObjectInfo> {
    let token: string | undefined;
    for (;;) {
      const query: Record<string, string> = { 'list-type': '2', prefix, 'max-keys': String(this.listPageSize) };
      if (token !== undefined) query['continuation-token'] = token;
      const r = await this.call({ method: 'GET', bucket, query });
      const xml = r.body.toString('utf8');
      for (const c of xmlBlocks(xml, 'Contents')) {
        yield {
          key: xmlText(c, 'Key') ?? '',
          size: Number(xmlText(c, 'Size') ?? 0),
          lastModified: new Date(xmlText(c, 'LastModified') ?? 0),
        };
      }
      if (xmlText(xml, 'IsTruncated') !== 'true') return;
      token = xmlText(xml, 'NextContinuationToken');
      if (!token) throw new BackupError(BackupErrorCode.TargetUnavailable, `${this.endpointName}: truncated listing of bucket '${bucket}' without a continuation token`);
    }
  }

  private async putMultipart(bucket: string, key: string, body: Buffer, signal?: AbortSignal): Promise<void> {
    const init = await this.call({ method: 'POST', bucket, key, query: { uploads: '' }, signal });
    const uploadId = xmlText(init.body.toString('utf8'), 'UploadId');
    if (!uploadId) throw new BackupError(BackupErrorCode.TargetUnavailable, `${this.endpointName}: no UploadId for '${bucket}/${key}'`);
    try {
      const parts: Promise<string>[] = [];
      for (let off = 0, n = 1; off < body.length; off += this.partBytes, n++) {
        const partNumber = n;
        const chunk = body.subarray(off, Math.min(body.length, off + this.partBytes));
        parts.push(this.call({ method: 'PUT', bucket, key, query: { partNumber: String(partNumber), uploadId }, body: chunk, signal })
          .then((r) => String(r.headers.etag ?? '')));
      }
      const etags = await Promise.all(parts);
      const doc = `<CompleteMultipartUpload>${etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${e}</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
      const done = await this.call({ method: 'POST', bucket, key, query: { uploadId }, body: Buffer.from(doc) });
      // S3 may answer 200 with an error document once the parts are being joined.
      if (/<Error>/.test(done.body.toString('utf8'))) throw new Transient(`complete multipart: ${xmlText(done.body.toString('utf8'), 'Code')}`);
    } catch (e) {
      await this.call({ method: 'DELETE', bucket, key, query: { uploadId } }, [404]).catch(() => undefined);
      throw e;
    }
  }

  /** One request with retries; `okStatus` lists non-2xx statuses the caller handles. */
  private async call(req: Req, okStatus: number[] = []): Promise<Res> {
    const what = `${req.method} ${req.bucket}/${req.key ?? ''}`;
    let lastCause = '';
    for (let attempt = 1; ; attempt++) {
      if (req.signal?.aborted) throw new BackupError(BackupErrorCode.Cancelled, `${what}: cancelled`);
      await this.acquire();
      let res: Res;
      try {
        res = await this.transport(req);
      } catch (e) {
        lastCause = (e as Error).message;
        res = { status: -1, headers: {}, body: Buffer.alloc(0) };
      } finally {
        this.release();
      }
      if (res.status >= 200 && res.status < 300) return res;
      if (okStatus.includes(res.status)) return res;
      const code = res.status > 0 ? (xmlText(res.body.toString('utf8'), 'Code') ?? `HTTP ${res.status}`) : '';
      const transient = res.status < 0 || res.status >= 500 || res.status === 429 || code === 'SlowDown' || code === 'RequestTimeout';
      if (res.status > 0) lastCause = `${res.status} ${code}`;
      if (!transient) throw this.fatal(req, res.status, code);
      if (attempt >= this.attempts) {
        throw new BackupError(BackupErrorCode.TargetUnavailable,
          `${what} at ${this.endpointName} failed ${attempt} times, last: ${lastCause}`);
      }
      this.onRetry?.(what, attempt, lastCause);
      const cap = Math.min(S3_BACKOFF_MAX_MS, S3_BACKOFF_BASE_MS * 2 ** (attempt - 1));
      await new Promise((r) => setTimeout(r, Math.random() * cap));
    }
  }

  /** A GET into a buffer goes over RawGetter (no copy per piece of body) unless the server's framing needs node:http. */
  private async transport(req: Req): Promise<Res> {
    if (this.raw === null || req.method !== 'GET' || req.into === undefined) return this.once(req);
    const { target, headers } = this.prepare(req);
    let head = `GET ${target} HTTP/1.1\r\n`;
    for (const [k, v] of Object.entries(headers)) head += `${k}: ${v}\r\n`;
    try {
      return await this.raw.get(`${head}\r\n`, req.into, this.idleTimeoutMs, req.signal);
    } catch (e) {
      if (!(e instanceof RawUnsupported)) throw e;
      this.raw.close();
      this.raw = null;
      return this.once(req);
    }
  }

  private fatal(req: Req, status: number, code: string): BackupError {
    const where = `bucket '${req.bucket}' at ${this.endpointName}`;
    if (code === 'NoSuchBucket') return new BackupError(BackupErrorCode.TargetNotFound, `${where} does not exist (NoSuchBucket)`);
    if (status === 403) {
      return new BackupError(BackupErrorCode.TargetDenied,
        `access to ${where} denied (${code}): check the access key and secret (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the AWS profile)`);
    }
    return new BackupError(BackupErrorCode.TargetUnavailable, `${req.method} ${req.bucket}/${req.key ?? ''} at ${this.endpointName}: ${status} ${code}`);
  }

  private acquire(): Promise<void> {
    if (this.active < this.concurrency) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(() => { this.active++; resolve(); }));
  }

  private release(): void {
    this.active--;
    this.waiting.shift()?.();
  }

  /** The request's path (with its query) and signed headers. */
  private prepare(req: Req): { target: string; headers: Record<string, string>; body: Buffer } {
    const ep = this.config.endpoint;
    const base = ep.pathname.replace(/\/+$/, '');
    const path = encodePath(`${base}/${req.bucket}${req.key !== undefined ? `/${req.key}` : ''}`);
    const query = req.query ?? {};
    const qs = canonicalQuery(query);
    const body = req.body ?? Buffer.alloc(0);
    const payloadSha256 = body.length === 0 ? EMPTY_SHA256 : (req.bodySha256 ?? sha256Hex(body));
    const date = amzDate(new Date());
    const headers: Record<string, string> = {
      host: ep.host,
      'x-amz-date': date,
      'x-amz-content-sha256': payloadSha256,
      ...(this.config.credentials.sessionToken ? { 'x-amz-security-token': this.config.credentials.sessionToken } : {}),
      ...req.headers,
    };
    headers.authorization = authorization({
      method: req.method, path, query, headers, payloadSha256, amzDate: date,
      region: this.config.region, service: 's3', credentials: this.config.credentials,
    });
    headers['content-length'] = String(body.length);
    return { target: qs === '' ? path : `${path}?${qs}`, headers, body };
  }

  private once(req: Req): Promise<Res> {
    const ep = this.config.endpoint;
    const { target, headers, body } = this.prepare(req);
    const mod = ep.protocol === 'https:' ? https : http;
    return new Promise<Res>((resolve, reject) => {
      const r = mod.request({
        host: ep.hostname, port: ep.port || undefined, method: req.method,
        path: target, headers, agent: this.agent,
        ...(req.signal ? { signal: req.signal } : {}),
      }, (res) => {
        const chunks: Buffer[] = [];
        let got = 0;
        const status = res.statusCode ?? 0;
        const isError = status >= 300;
        const want = res.headers['content-length'];
        const into = req.into !== undefined && !isError && want !== undefined && Number(want) <= req.into.length ? req.into : null;
        res.on('data', (d: Buffer) => {
          if (into !== null) {
            // A body longer than announced is cut here and refused at the end (short/long body).
            if (got < into.length) d.copy(into, got, 0, Math.min(d.length, into.length - got));
          } else if (!isError || got + d.length <= ERROR_BODY_MAX) {
            chunks.push(d);
          }
          got += d.length;
        });
        res.on('error', (e) => reject(e));
        res.on('aborted', () => reject(new Error('response aborted')));
        res.on('end', () => {
          if (req.method !== 'HEAD' && want !== undefined && Number(want) !== got) {
            reject(new Error(`short body: ${got} of ${want} bytes`));
            return;
          }
          resolve({ status, headers: res.headers, body: into !== null ? into.subarray(0, got) : Buffer.concat(chunks) });
        });
      });
      r.setTimeout(this.idleTimeoutMs, () => r.destroy(new Error(`no response for ${this.idleTimeoutMs} ms`)));
      r.on('error', reject);
      r.end(body);
    });
  }
}
