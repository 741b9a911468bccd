// Stream connections on the control socket (protocol/control.md, "Stream connections"): a
// connection whose FIRST line is a `snapshot.export` or `volume.import` request stops being a
// line protocol after it, and carries one snapshot stream (protocol/stream.md):
//   export: request line -> one response line -> (on success) the stream's bytes -> server ends;
//   import: request line + the stream's bytes -> client half-closes -> one response line -> end.
// Any other first line hands the connection, untouched, to the line protocol. This way
// `snapnbd snapshot export | ssh host snapnbd volume import` needs nothing but the control socket
// on each side, and the store stays with the one process that serves it.
import type net from 'node:net';
import { exportHeader, exportStream } from '../backup/stream-export.ts';
import { importStream } from '../backup/stream-import.ts';
import { log } from '../util/log.ts';
import { ControlErrorCode, RpcCode, RpcError, toRpcError } from './errors.ts';
import { LineSplitter, MAX_LINE_BYTES } from './framing.ts';
import type { ControlContext } from './methods.ts';
import { answerFrame } from './server.ts';
import { InvalidRequestError, parseRequest, validateParams, type RpcId } from './validate.ts';

export const STREAM_METHODS = ['snapshot.export', 'volume.import'] as const;
type StreamMethod = (typeof STREAM_METHODS)[number];

const name = { type: 'string', required: true } as const;
const EXPORT_PARAMS = { volume: name, snapshot: name, since: { type: 'string', required: false } } as const;
const IMPORT_PARAMS = { name } as const;

const NEWLINE = 0x0a;
/**
 * A stream connection on which nothing moves for this long is closed (an import is then rolled
 * back): a stalled peer must not hold a volume's change lock, or its snapshots, for ever.
 */
export const STREAM_IDLE_TIMEOUT_MS = 10 * 60_000;

function isStreamMethod(m: unknown): m is StreamMethod {
  return typeof m === 'string' && (STREAM_METHODS as readonly string[]).includes(m);
}

/** The stream request on a first line, or null when the line belongs to the line protocol. */
function streamRequest(line: Buffer): unknown {
  try {
    const msg: unknown = JSON.parse(line.toString('utf8'));
    if (typeof msg === 'object' && msg !== null && isStreamMethod((msg as { method?: unknown }).method)) return msg;
  } catch {
    // not JSON: the line protocol answers it
  }
  return null;
}

/**
 * Reads the connection's first line, then serves it as a stream connection or hands the socket
 * (with every byte read so far put back) to `lineProtocol`.
 */
export function routeConnection(socket: net.Socket, ctx: ControlContext, lineProtocol: (s: net.Socket) => void): void {
  let head: Buffer = Buffer.alloc(0);
  const onError = (e: Error): void => log.debug(`control connection: ${e.message}`);
  socket.on('error', onError);
  const stop = (): void => {
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.pause();
  };
  const handOver = (): void => {
    socket.unshift(head);
    socket.off('error', onError);
    lineProtocol(socket);
    socket.resume();
  };
  const onData = (chunk: Buffer): void => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    const nl = head.indexOf(NEWLINE);
    if (nl < 0 && head.length <= MAX_LINE_BYTES) return;
    stop();
    const req = nl < 0 ? null : streamRequest(head.subarray(0, nl));
    if (req === null) return handOver();
    void serveStream(socket, req, head.subarray(nl + 1), ctx).catch((e) => {
      log.error('control stream connection failed', e);
      socket.destroy();
    });
  };
  // The peer half-closed before any newline: the line protocol treats that as one last line.
  const onEnd = (): void => {
    stop();
    const splitter = new LineSplitter(MAX_LINE_BYTES);
    const frames = [...splitter.push(head), ...splitter.end()];
    void (async () => {
      for (const f of frames) {
        const reply = await answerFrame(f, ctx);
        if (reply !== undefined) socket.write(`${JSON.stringify(reply)}\n`);
      }
      socket.end();
    })().catch(() => socket.destroy());
  };
  socket.on('data', onData);
  socket.on('end', onEnd);
}

function writeLine(socket: net.Socket, obj: unknown): void {
  socket.write(`${JSON.stringify(obj)}\n`);
}

function writeError(socket: net.Socket, id: RpcId, e: unknown): void {
  const err = toRpcError(e);
  if (err.rpcCode === RpcCode.InternalError) log.error('control stream request failed', e);
  writeLine(socket, { jsonrpc: '2.0', id, error: err.toObject() });
}

/** Resolves when the socket can take more, or has closed (then: false). */
function drained(socket: net.Socket): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean) => (): void => {
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      resolve(ok);
    };
    const onDrain = done(true);
    const onClose = done(false);
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

async function serveStream(socket: net.Socket, msg: unknown, rest: Buffer, ctx: ControlContext): Promise<void> {
  let id: RpcId = null;
  try {
    const req = parseRequest(msg);
    id = req.id ?? null;
    if (req.positional) throw new RpcError(RpcCode.InvalidParams, ControlErrorCode.InvalidParams, `${req.method}: params must be an object (named parameters)`);
    if (req.method === 'snapshot.export') await serveExport(socket, id, validateParams(req.method, EXPORT_PARAMS, req.params), ctx);
    else await serveImport(socket, id, validateParams(req.method, IMPORT_PARAMS, req.params), rest, ctx);
  } catch (e) {
    if (socket.destroyed) return;
    writeError(socket, e instanceof InvalidRequestError ? e.requestId : id, e);
    // The peer may still be sending (an import refused early): read and drop it until it closes.
    socket.end();
    socket.on('data', () => undefined);
    socket.resume();
  }
}

async function serveExport(socket: net.Socket, id: RpcId, p: { volume: string; snapshot: string; since?: string }, ctx: ControlContext): Promise<void> {
  const req = { volume: p.volume, snapshot: p.snapshot, since: p.since ?? null };
  const held = req.since === null ? [req.snapshot] : [req.snapshot, req.since];
  socket.resume(); // a client's half-close must be seen; it sends nothing more
  socket.on('data', () => undefined);
  await ctx.registry.holdingSnapshots(req.volume, held, async (store, revoked) => {
    // Revoked (the server stops, a forced delete): end now, even if blocked on a slow reader.
    revoked.addEventListener('abort', () => socket.destroy(), { once: true });
    const header = exportHeader(store, req);
    writeLine(socket, {
      jsonrpc: '2.0', id,
      result: { volume: header.volume, snapshot: header.snapshot, guid: header.guid, since: header.base?.name ?? null, baseGuid: header.base?.guid ?? null, size: header.size },
    });
    let bytes = 0;
    socket.setTimeout(STREAM_IDLE_TIMEOUT_MS, () => socket.destroy(new Error('idle stream connection')));
    try {
      for await (const bufs of exportStream(store, req, header)) {
        let ok = true;
        for (const b of bufs) {
          ok = socket.write(b);
          bytes += b.length;
        }
        if (revoked.aborted) throw revoked.reason;
        if (!ok && !(await drained(socket))) throw new Error('the client closed the connection');
      }
    } catch (e) {
      log.warn(`export of ${req.volume}@${req.snapshot} stopped after ${bytes} bytes`, e);
      socket.destroy();
      return;
    }
    socket.end();
    log.info(`exported ${req.volume}@${req.snapshot}${req.since === null ? '' : ` since ${req.since}`}: ${bytes} bytes`);
  });
}

async function serveImport(socket: net.Socket, id: RpcId, p: { name: string }, rest: Buffer, ctx: ControlContext): Promise<void> {
  async function* input(): AsyncGenerator<Buffer> {
    if (rest.length > 0) yield rest;
    // Not destroyed when the importer stops early: the error still has to be answered.
    for await (const chunk of socket.iterator({ destroyOnReturn: false })) yield chunk as Buffer;
  }
  const result = await ctx.registry.exclusive(p.name, (store) => {
    socket.setTimeout(STREAM_IDLE_TIMEOUT_MS, () => socket.destroy(new Error('idle stream connection')));
    return importStream(store, p.name, input());
  });
  log.info(`imported ${result.volume}@${result.snapshot}${result.base === null ? '' : ` onto ${result.base}`}: ${result.bytes} bytes`);
  writeLine(socket, { jsonrpc: '2.0', id, result });
  socket.end();
}
