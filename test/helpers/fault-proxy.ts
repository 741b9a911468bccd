// An HTTP proxy between the S3 client and RGW that misbehaves on demand: answers 500 or 503
// SlowDown itself, resets the connection, stalls (never answers), forwards the request late
// (`delay`: a slow target; `hold`: until release()), or forwards the response but cuts its body short. Each fault applies to the next N requests that match; the rest pass
// through unchanged (the Host header too, so signatures stay valid).
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Fault = 'status500' | 'slowdown' | 'reset' | 'stall' | 'truncate' | 'delay' | 'hold';

/** How late a `delay` fault forwards its request, unless told. */
export const FAULT_DELAY_MS = 1500;

interface Rule {
  fault: Fault;
  left: number;
  delayMs: number;
  match: (method: string, url: string) => boolean;
}

export interface FaultProxy {
  endpoint: string;
  /** Injects `fault` into the next `times` matching requests (`delayMs`: how late a `delay` forwards). */
  inject(fault: Fault, times: number, match?: (method: string, url: string) => boolean, delayMs?: number): void;
  /** Drops every pending fault. */
  clear(): void;
  /** Forwards every request a `hold` fault is holding. */
  release(): void;
  /** Requests seen, as "METHOD url". */
  seen: string[];
  faultsServed: number;
  close(): Promise<void>;
}

export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const to = new URL(target);
  const rules: Rule[] = [];
  const held: (() => void)[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const state = { seen: [] as string[], faultsServed: 0 };
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    state.seen.push(`${req.method} ${url}`);
    const rule = rules.find((r) => r.left > 0 && r.match(req.method ?? '', url));
    if (rule) { rule.left--; state.faultsServed++; }
    const body: Buffer[] = [];
    req.on('data', (d: Buffer) => body.push(d));
    req.on('end', () => {
      switch (rule?.fault) {
        case 'status500':
          res.writeHead(500, { 'content-type': 'application/xml' }).end('<Error><Code>InternalError</Code></Error>');
          return;
        case 'slowdown':
          res.writeHead(503, { 'content-type': 'application/xml' }).end('<Error><Code>SlowDown</Code></Error>');
          return;
        case 'reset':
          req.socket.resetAndDestroy();
          return;
        case 'stall':
          return; // the client's idle timeout must end it
        default:
      }
      const forward = (): void => {
        const up = http.request({
          host: to.hostname, port: to.port, method: req.method, path: url, headers: req.headers,
        }, (upRes) => {
          const chunks: Buffer[] = [];
          upRes.on('data', (d: Buffer) => chunks.push(d));
          upRes.on('end', () => {
            const all = Buffer.concat(chunks);
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            if (rule?.fault === 'truncate' && all.length > 1) {
              res.write(all.subarray(0, all.length >> 1), () => req.socket.destroy());
              return;
            }
            res.end(all);
          });
        });
        up.on('error', () => req.socket.destroy());
        up.end(Buffer.concat(body));
      };
      if (rule?.fault === 'delay') setTimeout(forward, rule.delayMs);
      else if (rule?.fault === 'hold') held.push(forward);
      else forward();
    });
  });
  server.on('connection', (s) => { sockets.add(s); s.once('close', () => sockets.delete(s)); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    inject(fault, times, match = () => true, delayMs = FAULT_DELAY_MS) { rules.push({ fault, left: times, match, delayMs }); },
    clear() { rules.length = 0; },
    release() { for (const f of held.splice(0)) f(); },
    get seen() { return state.seen; },
    get faultsServed() { return state.faultsServed; },
    async close() {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close').catch(() => undefined);
    },
  };
}
