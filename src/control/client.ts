// A client of the control socket, for the CLI and the tests: one connection, requests matched to
// responses by id, lines framed by the same splitter as the server.
import net from 'node:net';
import { LineSplitter } from './framing.ts';
import type { MethodName, MethodParams, MethodResult } from './methods.ts';

/** The server answered with an error. `code` is error.data.code (e.g. VOLUME_BUSY). */
export class ControlCallError extends Error {
  readonly code: string;
  readonly rpcCode: number;
  readonly data: Record<string, unknown>;
  constructor(rpcCode: number, code: string, message: string, data: Record<string, unknown>) {
    super(message);
    this.name = 'ControlCallError';
    this.rpcCode = rpcCode;
    this.code = code;
    this.data = data;
  }
}

/** An error response's `error` member as a ControlCallError: its code is data.code, else the JSON-RPC code. */
export function callErrorOf(error: { code?: unknown; message?: unknown; data?: unknown }): ControlCallError {
  const data = (typeof error.data === 'object' && error.data !== null ? error.data : {}) as Record<string, unknown>;
  const code = typeof data.code === 'string' ? data.code : String(error.code);
  return new ControlCallError(Number(error.code), code, String(error.message ?? code), data);
}

/** No server at the path (or it went away mid-call). */
export class ControlUnreachableError extends Error {
  readonly path: string;
  constructor(path: string, reason: string) {
    super(`cannot reach the control socket ${path}: ${reason}`);
    this.name = 'ControlUnreachableError';
    this.path = path;
  }
}

/** Connects to the control socket; ControlUnreachableError says why not, for people. */
export function connectControlSocket(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    socket.once('connect', () => {
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      const why = e.code === 'ENOENT' ? 'no such file (is the server running?)'
        : e.code === 'ECONNREFUSED' ? 'connection refused (stale socket: the server is not running)'
        : e.code === 'EACCES' ? 'permission denied (the socket is owner-only)'
        : e.message;
      reject(new ControlUnreachableError(path, why));
    });
  });
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

export class ControlClient {
  readonly path: string;
  private readonly socket: net.Socket;
  private readonly splitter = new LineSplitter(Number.MAX_SAFE_INTEGER);
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closedError: Error | null = null;

  private constructor(path: string, socket: net.Socket) {
    this.path = path;
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const f of this.splitter.push(chunk)) if (f.kind === 'line') this.onLine(f.text);
    });
    const fail = (e: Error): void => {
      this.closedError ??= e;
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
    };
    socket.on('error', (e) => fail(new ControlUnreachableError(path, e.message)));
    socket.on('close', () => fail(new ControlUnreachableError(path, 'the server closed the connection')));
  }

  static async connect(path: string): Promise<ControlClient> {
    return new ControlClient(path, await connectControlSocket(path));
  }

  /** A method of src/control/methods.ts, with its params and result types. */
  request<M extends MethodName>(method: M, ...params: {} extends MethodParams<M> ? [MethodParams<M>?] : [MethodParams<M>]): Promise<MethodResult<M>> {
    return this.call<MethodResult<M>>(method, (params[0] ?? {}) as Record<string, unknown>);
  }

  call<T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(`${JSON.stringify({ jsonrpc: '2.0', id, method, params })}\n`);
    });
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  private onLine(text: string): void {
    let msg: { id?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown; data?: unknown } };
    try {
      msg = JSON.parse(text) as typeof msg;
    } catch {
      return;
    }
    if (typeof msg.id !== 'number') return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.error) {
      p.reject(callErrorOf(msg.error));
    } else {
      p.resolve(msg.result);
    }
  }
}
