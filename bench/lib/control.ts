// A minimal client of snapnbd's control socket: JSON-RPC 2.0, one object per line, over a Unix
// socket. One connection, requests matched to replies by id.
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';

export class RpcError extends Error {
  readonly code: string;
  constructor(method: string, code: string, message: string) {
    super(`${method}: ${code}: ${message}`);
    this.code = code;
  }
}

interface Pending { method: string; resolve(v: unknown): void; reject(e: Error): void }

export class ControlClient {
  private readonly sock: Socket;
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    const failAll = (e: Error): void => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    sock.on('error', failAll);
    sock.on('close', () => failAll(new Error('control socket closed')));
  }

  static async open(path: string): Promise<ControlClient> {
    const sock = connect(path);
    await Promise.race([
      once(sock, 'connect'),
      once(sock, 'error').then(([e]) => { throw new Error(`cannot connect to control socket ${path}: ${(e as Error).message}`); }),
    ]);
    return new ControlClient(sock);
  }

  call(method: string, params: Record<string, unknown>): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolveCall, reject) => {
      this.pending.set(id, { method, resolve: resolveCall, reject });
      this.sock.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
    });
  }

  /** Round-trip time of one call, ms. */
  async timed(method: string, params: Record<string, unknown>): Promise<number> {
    const t0 = process.hrtime.bigint();
    await this.call(method, params);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  close(): void {
    this.sock.end();
    this.sock.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line === '') continue;
      let msg: { id?: number; result?: unknown; error?: { code?: number; message?: string; data?: { code?: string } } };
      try { msg = JSON.parse(line) as typeof msg; } catch { continue; }
      const p = msg.id === undefined ? undefined : this.pending.get(msg.id);
      if (!p || msg.id === undefined) continue;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new RpcError(p.method, msg.error.data?.code ?? String(msg.error.code ?? 'ERROR'), msg.error.message ?? ''));
      else p.resolve(msg.result);
    }
  }
}
