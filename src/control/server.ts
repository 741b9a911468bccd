// The control socket: JSON-RPC 2.0, one JSON text per line, over a Unix socket that only its
// owner may use (mode 0600: it is the administrative interface). Each connection reads lines
// through the pure LineSplitter and answers them in order; connections are independent, so a bad
// line or a slow method on one never disturbs another. Changes to one volume are serialised by
// the registry, whichever connections they come from.
import { chmodSync, lstatSync, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { log } from '../util/log.ts';
import { ControlErrorCode, RpcCode, RpcError, toRpcError, type RpcErrorObject } from './errors.ts';
import { LineSplitter, MAX_LINE_BYTES, type Frame } from './framing.ts';
import { callMethod, isMethodName, type ControlContext } from './methods.ts';
import { stringifySliced } from './json-sliced.ts';
import { routeConnection } from './stream-connection.ts';
import { InvalidRequestError, parseRequest, type RpcId } from './validate.ts';

export type { ControlContext } from './methods.ts';

/** Lines read ahead of the one being answered before the connection stops reading. */
export const MAX_QUEUED_FRAMES = 16;
/** Requests in one batch. */
export const MAX_BATCH = 256;
/** Waiting for an answer when probing whether an existing socket file is live. */
export const STALE_PROBE_TIMEOUT_MS = 2_000;
/** The socket file's mode: owner read/write only. */
export const SOCKET_MODE = 0o600;

export interface ControlServer {
  path: string;
  close(): Promise<void>;
}

type Response =
  | { jsonrpc: '2.0'; id: RpcId; result: unknown }
  | { jsonrpc: '2.0'; id: RpcId; error: RpcErrorObject };

export async function startControlServer(path: string, ctx: ControlContext): Promise<ControlServer> {
  await claimSocketPath(path);
  const connections = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
    routeConnection(socket, ctx, (s) => serveConnection(s, ctx));
  });
  server.on('error', (e) => log.error(`control socket ${path}`, e));
  // The bind happens inside listen(), synchronously: a umask of 077 for that call means the file
  // is never, even briefly, reachable by others. chmod afterwards in case the platform differs.
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(path, SOCKET_MODE);
  const ino = statSync(path).ino;
  return {
    path,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of connections) s.destroy();
      });
      // Unlink only our own file: a successor may already have replaced it.
      try {
        if (statSync(path).ino === ino) unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}

/**
 * An existing socket file: replaced when nobody answers on it (a crashed server left it), an
 * error when a live server holds it. Anything that is not a socket is never touched.
 */
async function claimSocketPath(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`control socket path ${path} exists and is not a socket; refusing to replace it`);
  if (await isLive(path)) {
    throw new Error(`control socket ${path} is in use by another running server; each server needs its own control socket`);
  }
  log.info(`control socket ${path}: replacing a stale socket file`);
  unlinkSync(path);
}

function isLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const done = (live: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(live);
    };
    // A server too busy to accept within the probe time is still live as far as we can tell.
    const timer = setTimeout(() => done(true), STALE_PROBE_TIMEOUT_MS);
    s.once('connect', () => done(true));
    s.once('error', (e: NodeJS.ErrnoException) => done(e.code !== 'ECONNREFUSED' && e.code !== 'ENOENT'));
  });
}

function serveConnection(socket: net.Socket, ctx: ControlContext): void {
  const splitter = new LineSplitter(MAX_LINE_BYTES);
  const queue: Frame[] = [];
  let running = false;
  let closed = false;
  let ended = false;
  let paused = false;

  socket.on('error', (e) => log.debug(`control connection: ${e.message}`));
  socket.once('close', () => { closed = true; });
  socket.on('data', (chunk: Buffer) => {
    queue.push(...splitter.push(chunk));
    if (queue.length >= MAX_QUEUED_FRAMES && !paused) {
      paused = true;
      socket.pause();
    }
    void pump();
  });
  socket.once('end', () => {
    ended = true;
    queue.push(...splitter.end());
    void pump();
  });

  async function pump(): Promise<void> {
    if (running) return;
    running = true;
    try {
      while (queue.length > 0 && !closed) {
        const frame = queue.shift()!;
        if (paused && queue.length < MAX_QUEUED_FRAMES / 2) {
          paused = false;
          socket.resume();
        }
        const reply = await answerFrame(frame, ctx);
        if (reply === undefined || closed) continue;
        const text = await stringifySliced(reply); // a big diff page: not one long turn
        if (closed) continue;
        if (!socket.write(`${text}\n`)) {
          await new Promise<void>((resolve) => {
            const go = (): void => { socket.off('drain', go); socket.off('close', go); resolve(); };
            socket.on('drain', go);
            socket.on('close', go);
          });
        }
      }
    } finally {
      running = false;
    }
    if (ended && queue.length === 0 && !closed) socket.end();
  }
}

/** The response to one line: an object, an array (batch), or undefined (notifications only). */
export async function answerFrame(frame: Frame, ctx: ControlContext): Promise<Response | Response[] | undefined> {
  if (frame.kind === 'oversize') {
    return errorResponse(null, new RpcError(RpcCode.InvalidRequest, ControlErrorCode.LineTooLong,
      `request line longer than ${MAX_LINE_BYTES} bytes; the rest of that line was discarded`, { limit: MAX_LINE_BYTES }));
  }
  const text = frame.text.trim();
  if (text === '') return undefined; // blank lines are keep-alives, not requests
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch (e) {
    return errorResponse(null, new RpcError(RpcCode.ParseError, ControlErrorCode.ParseError, `parse error: ${(e as Error).message}`));
  }
  if (Array.isArray(msg)) {
    if (msg.length === 0) return errorResponse(null, new RpcError(RpcCode.InvalidRequest, ControlErrorCode.InvalidRequest, 'empty batch'));
    if (msg.length > MAX_BATCH) {
      return errorResponse(null, new RpcError(RpcCode.InvalidRequest, ControlErrorCode.InvalidRequest, `batch of ${msg.length} requests; at most ${MAX_BATCH}`));
    }
    const out: Response[] = [];
    // In order, like separate lines: a batch that creates then snapshots a volume works.
    for (const m of msg) {
      const r = await answerOne(m, ctx);
      if (r !== undefined) out.push(r);
    }
    return out.length > 0 ? out : undefined;
  }
  return answerOne(msg, ctx);
}

async function answerOne(msg: unknown, ctx: ControlContext): Promise<Response | undefined> {
  let req;
  try {
    req = parseRequest(msg);
  } catch (e) {
    if (e instanceof InvalidRequestError) return errorResponse(e.requestId, e);
    throw e;
  }
  const notification = req.id === undefined;
  const id = req.id ?? null;
  try {
    if (!isMethodName(req.method)) {
      throw new RpcError(RpcCode.MethodNotFound, ControlErrorCode.MethodNotFound, `unknown method '${req.method}'`);
    }
    if (req.positional) {
      throw new RpcError(RpcCode.InvalidParams, ControlErrorCode.InvalidParams, `${req.method}: params must be an object (named parameters)`);
    }
    const result = await callMethod(req.method, req.params, ctx);
    if (log.enabled('debug')) log.debug(`control: ${req.method} ok`);
    return notification ? undefined : { jsonrpc: '2.0', id, result: result ?? null };
  } catch (e) {
    const err = toRpcError(e);
    if (err.rpcCode === RpcCode.InternalError) log.error(`control: ${req.method} failed`, e);
    else if (log.enabled('debug')) log.debug(`control: ${req.method}: ${err.dataCode}: ${err.message}`);
    return notification ? undefined : errorResponse(id, err);
  }
}

function errorResponse(id: RpcId, e: RpcError): Response {
  return { jsonrpc: '2.0', id, error: e.toObject() };
}
