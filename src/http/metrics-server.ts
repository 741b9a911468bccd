// `serve --metrics HOST:PORT`: a small HTTP server answering GET /metrics in the Prometheus text
// format. Anything else gets 404 or 405; Node's HTTP parser answers malformed requests with 400.
// Bounded like the NBD side: few connections, short timeouts, small headers.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { log } from '../util/log.ts';
import type { MetricsCollector } from './metrics.ts';
import { EXPOSITION_CONTENT_TYPE, encodeFamilies } from './prom-text.ts';

export const METRICS_PATH = '/metrics';
/** Scrapers and curious humans at once; more are refused at accept. */
export const METRICS_MAX_CONNECTIONS = 16;
/** A request's headers and body must arrive within this long. */
export const METRICS_REQUEST_TIMEOUT_MS = 10_000;
/** An idle kept-alive connection is closed after this long (Prometheus scrapes every 15-60 s). */
export const METRICS_KEEPALIVE_MS = 65_000;
export const METRICS_MAX_HEADER_BYTES = 8 * 1024;

export interface MetricsServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(host: string, port: number, collector: MetricsCollector): Promise<MetricsServer> {
  const server = http.createServer({ maxHeaderSize: METRICS_MAX_HEADER_BYTES, requestTimeout: METRICS_REQUEST_TIMEOUT_MS, keepAliveTimeout: METRICS_KEEPALIVE_MS }, (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== METRICS_PATH) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end(`not found: try ${METRICS_PATH}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    collector.collect().then(
      (families) => {
        const body = encodeFamilies(families);
        res.writeHead(200, { 'content-type': EXPOSITION_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (e: unknown) => {
        log.error('metrics: collecting failed', e);
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end('collecting metrics failed; see the server log\n');
      },
    );
  });
  server.maxConnections = METRICS_MAX_CONNECTIONS;
  server.on('clientError', (_e, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => log.error('metrics listener', e));
  const bound = (server.address() as AddressInfo).port;
  return {
    host,
    port: bound,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
