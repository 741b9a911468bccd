// A real server with the web console on a free loopback port, for console tests: its address
// (from server.info, as `snapnbd console url` finds it), its token, and a small HTTP client that
// sets any header a test needs (Host, Origin, ...), which fetch() would not allow.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { ControlClient } from '../../src/control/client.ts';
import { startServer, type RunningServer, type ServerOptions } from './server.ts';

export interface ConsoleServer {
  server: RunningServer;
  ctl: ControlClient;
  port: number;
  /** http://127.0.0.1:PORT (https:// when the server has a certificate) */
  base: string;
  token: string;
  stop(): Promise<void>;
}

export async function startConsoleServer(opts: ServerOptions = {}): Promise<ConsoleServer> {
  const server = await startServer({ ...opts, args: ['--http', '127.0.0.1:0', ...(opts.args ?? [])] });
  try {
    const ctl = await ControlClient.connect(server.controlPath);
    const info = await ctl.call<{ listeners: string[] }>('server.info');
    const http = info.listeners.find((l) => /^https? /.test(l));
    if (http === undefined) throw new Error(`no http listener in ${JSON.stringify(info.listeners)}`);
    const port = Number(/:(\d+)$/.exec(http)![1]);
    const token = readFileSync(join(server.dataDir, 'console.token'), 'utf8').trim();
    return {
      server, ctl, port, base: `${http.split(' ')[0]}://127.0.0.1:${port}`, token,
      async stop() {
        ctl.close();
        await server.stop();
      },
    };
  } catch (e) {
    await server.stop();
    throw e;
  }
}

export interface HttpReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json(): unknown;
}

/** One request with exactly these headers (Host defaults to 127.0.0.1:PORT). */
export function request(port: number, opts: { method?: string; path?: string; headers?: Record<string, string>; body?: string | Buffer }): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, method: opts.method ?? 'GET', path: opts.path ?? '/',
      headers: { Host: `127.0.0.1:${port}`, ...opts.headers },
    }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: () => JSON.parse(body) as unknown }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** A JSON-RPC call to /api/rpc with the given token (null: no Authorization header). */
export function rpcRequest(c: ConsoleServer, method: string, params: Record<string, unknown>, token: string | null = c.token, headers: Record<string, string> = {}): Promise<HttpReply> {
  return request(c.port, {
    method: 'POST', path: '/api/rpc',
    headers: { 'Content-Type': 'application/json', ...(token === null ? {} : { Authorization: `Bearer ${token}` }), ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
}
