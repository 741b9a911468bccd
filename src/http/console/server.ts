// The web console over node:http: the static shell, one JSON-RPC endpoint that hands each
// request body to the control socket's own dispatcher (answerFrame: the same validation, methods
// and errors as a socket line; the console has no method of its own), and a Server-Sent Events
// stream of the state (watch.ts). Every API request passes guard.ts first. Given the NBD server's
// certificate (serve --tls-cert/--tls-key), the same handler is served over HTTPS instead, and a
// reload swaps the certificate for new connections.
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { MAX_LINE_BYTES } from '../../control/framing.ts';
import type { ControlContext } from '../../control/methods.ts';
import { answerFrame } from '../../control/server.ts';
import { TLS_MIN_VERSION } from '../../server/tls.ts';
import { log } from '../../util/log.ts';
import { findAssetDir, loadAssets, type Asset } from './assets.ts';
import { checkHost, checkSameOrigin, isLoopbackHost, checkToken, type Refusal, type RequestFacts } from './guard.ts';
import { ConsoleWatch } from './watch.ts';

export const RPC_PATH = '/api/rpc';
export const EVENTS_PATH = '/api/events';
/** Largest request body: the control socket's line limit. */
export const MAX_BODY_BYTES = MAX_LINE_BYTES;
/** Open event streams at once (each holds a connection). */
export const MAX_EVENT_STREAMS = 32;
/** A comment line on idle streams so proxies and browsers keep them open. */
export const EVENT_KEEPALIVE_MS = 15_000;
/** Bytes queued for a stream whose reader stopped reading: beyond this it is closed (the page reconnects). */
export const MAX_STREAM_BACKLOG = 1024 * 1024;
/** Time to receive a whole request (headers and body). */
export const REQUEST_TIMEOUT_MS = 30_000;

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'",
  "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export interface ConsoleOptions {
  host: string;
  port: number;
  token: string;
  ctx: ControlContext;
  /** Built assets (default: found by findAssetDir). */
  assetDir?: string;
  watchIntervalMs?: number;
  /** PEM certificate (chain) and key: serve HTTPS. */
  tls?: ConsolePem | null;
}

export interface ConsolePem { cert: string; key: string }

export interface ConsoleServer {
  host: string;
  port: number;
  scheme: 'http' | 'https';
  /** New TLS connections use this certificate (HTTPS consoles only; open ones keep theirs). */
  setCertificate(pem: ConsolePem): void;
  close(): Promise<void>;
}

export async function startConsole(opts: ConsoleOptions): Promise<ConsoleServer> {
  const assets = loadAssets(opts.assetDir ?? findAssetDir());
  const watch = new ConsoleWatch(opts.ctx, opts.watchIntervalMs);
  const streams = new Set<http.ServerResponse>();
  const loopbackOnly = isLoopbackHost(opts.host);

  const scheme = opts.tls ? 'https' : 'http';
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    handle(req, res).catch((e: unknown) => {
      log.error('console: request failed', e);
      if (!res.headersSent) sendJson(res, 500, { error: { code: 'INTERNAL', message: 'internal error (see the server log)' } });
      else res.destroy();
    });
  };
  const server = opts.tls
    ? https.createServer({ requestTimeout: REQUEST_TIMEOUT_MS, minVersion: TLS_MIN_VERSION, cert: opts.tls.cert, key: opts.tls.key }, onRequest)
    : http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS }, onRequest);
  server.on('clientError', (_e, socket) => socket.destroy());
  // A failed handshake (plain HTTP on the TLS port, an untrusted certificate) only closes that socket.
  server.on('tlsClientError', (_e: Error, socket: { destroy(): void }) => socket.destroy());

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const facts: RequestFacts = {
      host: req.headers.host,
      origin: req.headers.origin,
      secFetchSite: header(req, 'sec-fetch-site'),
      scheme,
    };
    const path = (req.url ?? '/').split('?')[0]!;
    const hostRefusal = checkHost(facts, loopbackOnly);
    if (hostRefusal) return refuse(res, hostRefusal);
    if (!path.startsWith('/api/')) return serveAsset(req, res, assets.get(path));
    const refusal = checkSameOrigin(facts) ?? checkToken(req.headers.authorization, opts.token);
    if (refusal) return refuse(res, refusal);
    if (path === RPC_PATH) {
      if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
      return serveRpc(req, res);
    }
    if (path === EVENTS_PATH) {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      return serveEvents(req, res);
    }
    sendJson(res, 404, { error: { code: 'NOT_FOUND', message: `no API at ${path}` } });
  }

  async function serveRpc(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (!/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? '')) {
      // A cross-site form cannot send this type without a preflight, which is never answered.
      return sendJson(res, 415, { error: { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'Content-Type must be application/json' } });
    }
    const body = await readBody(req, MAX_BODY_BYTES);
    if (body === null) {
      return sendJson(res, 413, { error: { code: 'TOO_LARGE', message: `request body longer than ${MAX_BODY_BYTES} bytes` } });
    }
    const reply = await answerFrame({ kind: 'line', text: body }, opts.ctx);
    watch.poke(touchesBackups(body)); // a change shows on every open console at once
    if (reply === undefined) {
      res.writeHead(204, { ...SECURITY_HEADERS, 'Cache-Control': 'no-store' });
      res.end();
      return;
    }
    sendJson(res, 200, reply);
  }

  function serveEvents(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (streams.size >= MAX_EVENT_STREAMS) {
      return sendJson(res, 503, { error: { code: 'TOO_MANY_STREAMS', message: `at most ${MAX_EVENT_STREAMS} open event streams` } });
    }
    res.writeHead(200, {
      ...SECURITY_HEADERS,
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
    });
    const send = (text: string): void => {
      if (res.writableLength > MAX_STREAM_BACKLOG) res.destroy();
      else res.write(text);
    };
    send(': snapnbd console events\n\n');
    streams.add(res);
    const unsubscribe = watch.subscribe((json) => send(`event: state\ndata: ${json}\n\n`));
    const keepalive = setInterval(() => send(': keep-alive\n\n'), EVENT_KEEPALIVE_MS);
    const done = (): void => {
      clearInterval(keepalive);
      unsubscribe();
      streams.delete(res);
    };
    req.socket.setTimeout(0);
    res.once('close', done);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => log.error('console listener', e));
  const bound = server.address() as AddressInfo;
  return {
    host: opts.host,
    port: bound.port,
    scheme,
    setCertificate(pem) {
      if (server instanceof https.Server) server.setSecureContext({ minVersion: TLS_MIN_VERSION, cert: pem.cert, key: pem.key });
    },
    async close() {
      watch.close();
      for (const s of streams) s.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/** A backup.* request: the backup lists are read again (they are otherwise read seldom). */
function touchesBackups(body: string): boolean {
  try {
    const m = (JSON.parse(body) as { method?: unknown }).method;
    return typeof m === 'string' && m.startsWith('backup.');
  } catch {
    return false;
  }
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function serveAsset(req: http.IncomingMessage, res: http.ServerResponse, asset: Asset | undefined): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(res, 'GET, HEAD');
  if (asset === undefined) {
    res.writeHead(404, { ...SECURITY_HEADERS, 'Content-Type': 'text/plain; charset=utf-8' });
    res.end('not found\n');
    return;
  }
  res.writeHead(200, { ...SECURITY_HEADERS, 'Content-Type': asset.type, 'Content-Length': asset.body.length, 'Cache-Control': 'no-cache' });
  res.end(req.method === 'HEAD' ? undefined : asset.body);
}

function refuse(res: http.ServerResponse, r: Refusal): void {
  const extra: Record<string, string> = r.status === 401 ? { 'WWW-Authenticate': 'Bearer realm="snapnbd console"' } : {};
  sendJson(res, r.status, { error: { code: r.code, message: r.message } }, extra);
}

function methodNotAllowed(res: http.ServerResponse, allow: string): void {
  sendJson(res, 405, { error: { code: 'METHOD_NOT_ALLOWED', message: `use ${allow}` } }, { Allow: allow });
}

function sendJson(res: http.ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, {
    ...SECURITY_HEADERS, ...extra,
    'Content-Type': 'application/json; charset=utf-8', 'Content-Length': body.length, 'Cache-Control': 'no-store',
  });
  res.end(body);
}

/** The body as text, or null when longer than `max` bytes (the rest is read and dropped, so the reply still arrives). */
async function readBody(req: http.IncomingMessage, max: number): Promise<string | null> {
  const parts: Buffer[] = [];
  let len = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    len += chunk.length;
    if (len <= max) parts.push(chunk);
  }
  return len > max ? null : Buffer.concat(parts).toString('utf8');
}
