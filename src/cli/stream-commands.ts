// `snapnbd snapshot export` and `snapnbd volume import`: move a snapshot stream (protocol/stream.md)
// between a running server and a file or a pipe, over a stream connection of the control socket
// (protocol/control.md, "Stream connections"). The export side checks the stream as it passes
// (a cut or ABORTed stream exits 1 and removes a partial -o file); the server checks an import
// and applies it all or nothing. Exit codes as for the other control commands.
import { once } from 'node:events';
import { createReadStream, createWriteStream, unlinkSync } from 'node:fs';
import type net from 'node:net';
import { resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { StreamDecoder, StreamFormatError } from '../backup/stream-format.ts';
import { callErrorOf, ControlCallError, ControlUnreachableError, connectControlSocket } from '../control/client.ts';
import { commandPrologue, ExitCode, snapshotArg, usageFailure } from './command-line.ts';
import { CONTROL_CLI_OPTIONS, controlFailure, controlSocketPath } from './control-session.ts';
import { resultPrinter } from './output.ts';
import { UsageError } from './usage.ts';
import { formatSize } from '../util/size.ts';

export const STREAM_USAGE = `Usage:
  snapnbd snapshot export VOLUME@SNAPSHOT [--since [VOLUME@]BASE] [-o FILE]
      write the snapshot as a stream to FILE (default: stdout, which must not be a terminal);
      with --since, only what changed since the older snapshot BASE
  snapnbd volume import NAME [-i FILE]
      read a stream from FILE (default: stdin) into the running server: a full stream creates
      volume NAME; an incremental one applies onto NAME, whose newest snapshot must be the
      stream's base (the same snapshot, by identity), and its head unchanged since

  e.g. snapnbd snapshot export vm1@mon --since tue | ssh host snapnbd volume import vm1

Options: --control PATH, --data-dir DIR (as for the other commands), --json (import; export with -o)
`;

const OPTIONS = {
  ...CONTROL_CLI_OPTIONS,
  since: { type: 'string' },
  output: { type: 'string', short: 'o' },
  input: { type: 'string', short: 'i' },
} as const;

interface ExportResult { volume: string; snapshot: string; guid: string; since: string | null; baseGuid: string | null; size: number }
interface ImportResult { volume: string; snapshot: string; guid: string; base: string | null; created: boolean; bytes: number; dataBytes: number; zeroBytes: number }

function request(method: string, params: Record<string, unknown>): string {
  return `${JSON.stringify({ jsonrpc: '2.0', id: 1, method, params })}\n`;
}

/** The server's one response line, as a result or a thrown ControlCallError. */
function settle(line: string): unknown {
  let msg: { result?: unknown; error?: { code?: unknown; message?: unknown; data?: unknown } };
  try {
    msg = JSON.parse(line) as typeof msg;
  } catch {
    throw new Error(`the server answered something that is not JSON: ${line.slice(0, 200)}`);
  }
  if (msg.error) throw callErrorOf(msg.error);
  return msg.result;
}

/** Reads the first line of `socket`; the bytes after it are handed back unread. */
function firstLine(socket: net.Socket, path: string): Promise<{ line: string; rest: Buffer }> {
  return new Promise((res, rej) => {
    let head = Buffer.alloc(0);
    const cleanup = (): void => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
    };
    const onData = (c: Buffer): void => {
      head = Buffer.concat([head, c]);
      const nl = head.indexOf(0x0a);
      if (nl < 0) return;
      cleanup();
      socket.pause();
      res({ line: head.toString('utf8', 0, nl), rest: head.subarray(nl + 1) });
    };
    const onEnd = (): void => {
      cleanup();
      rej(new ControlUnreachableError(path, 'the server closed the connection without an answer'));
    };
    const onError = (e: Error): void => {
      cleanup();
      rej(new ControlUnreachableError(path, e.message));
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
  });
}

async function runExport(path: string, spec: string, since: string | undefined, output: string | undefined, json: boolean): Promise<void> {
  const { volume, snapshot } = snapshotArg(spec, 'snapshot export');
  let base: string | undefined;
  if (since !== undefined) {
    if (since.includes('@')) {
      const b = snapshotArg(since, 'snapshot export --since');
      if (b.volume !== volume) throw new UsageError(`snapshot export: --since must be a snapshot of '${volume}', not of '${b.volume}'`);
      base = b.snapshot;
    } else base = since;
  }
  if (output === undefined && process.stdout.isTTY) {
    throw new UsageError('snapshot export: refusing to write a binary stream to a terminal (use -o FILE or a pipe)');
  }
  const socket = await connectControlSocket(path);
  socket.on('error', () => undefined); // surfaced as a cut stream or a missing answer
  try {
    socket.write(request('snapshot.export', { volume, snapshot, ...(base !== undefined ? { since: base } : {}) }));
    socket.end();
    const { line, rest } = await firstLine(socket, path);
    const result = settle(line) as ExportResult;
    const file = output === undefined ? null : resolve(output);
    const out: Writable = file === null ? process.stdout : createWriteStream(file);
    const outError = new Promise<never>((_r, rej) => out.once('error', rej));
    outError.catch(() => undefined);
    const dec = new StreamDecoder();
    let bytes = 0;
    try {
      const pass = async (chunk: Buffer): Promise<void> => {
        bytes += chunk.length;
        const r = dec.push(chunk);
        if (r instanceof StreamFormatError) throw r;
        if (!out.write(chunk)) await Promise.race([once(out, 'drain'), outError]);
      };
      if (rest.length > 0) await pass(rest);
      for await (const chunk of socket) await pass(chunk as Buffer);
      const err = dec.end();
      if (err) throw err;
      if (file !== null) {
        out.end();
        await Promise.race([once(out, 'finish'), outError]);
      }
    } catch (e) {
      if (file !== null) {
        out.destroy();
        try { unlinkSync(file); } catch { /* never created */ }
      }
      throw e;
    }
    if (file !== null) {
      const summary = { ...result, file, bytes };
      resultPrinter(json)(summary, () => `exported ${volume}@${snapshot}${result.since ? ` since ${result.since}` : ''} to ${file}: ${formatSize(bytes)}\n`);
    }
  } finally {
    socket.destroy();
  }
}

async function runImport(path: string, name: string, input: string | undefined, json: boolean): Promise<void> {
  if (input === undefined && process.stdin.isTTY) {
    throw new UsageError('volume import: refusing to read a stream from a terminal (use -i FILE or a pipe)');
  }
  const src: Readable = input === undefined ? process.stdin : createReadStream(resolve(input));
  let socket: net.Socket;
  try {
    // A FILE that cannot be opened is said before connecting (else its 'error' may come unheard).
    if (input !== undefined) await once(src, 'open');
    socket = await connectControlSocket(path);
  } catch (e) {
    src.destroy();
    throw e;
  }
  socket.on('error', () => undefined); // e.g. EPIPE after a refusal: the answer says why
  try {
    socket.write(request('volume.import', { name }));
    const answer = firstLine(socket, path);
    let answered = false;
    answer.then(() => { answered = true; }, () => { answered = true; });
    const closed = new Promise<void>((res) => socket.once('close', () => res()));
    // The server may answer before the end (a refusal): stop sending then.
    for await (const chunk of src) {
      if (answered || socket.destroyed) break;
      if (!socket.write(chunk as Buffer)) await Promise.race([once(socket, 'drain'), answer, closed]);
    }
    if (!socket.destroyed) socket.end();
    if (input === undefined) process.stdin.destroy();
    const r = settle((await answer).line) as ImportResult;
    resultPrinter(json)(r, () => `imported ${r.volume}@${r.snapshot}${r.base === null ? ' (new volume)' : ` onto ${r.volume}@${r.base}`}: ${formatSize(r.bytes)} read, ${formatSize(r.dataBytes)} written, guid ${r.guid}\n`);
  } finally {
    socket.destroy();
    src.destroy();
  }
}

/** `argv` starts with the noun: ['snapshot', 'export', ...] or ['volume', 'import', ...]. */
export async function runStreamCli(argv: string[]): Promise<number> {
  const parsed = commandPrologue(argv, { options: OPTIONS, allowPositionals: true }, STREAM_USAGE, usage);
  if (typeof parsed === 'number') return parsed;
  const v = parsed.values;
  const [noun, verb, ...args] = parsed.positionals;
  const path = controlSocketPath({ control: v.control, dataDir: v['data-dir'] });
  try {
    if (noun === 'snapshot' && verb === 'export') {
      if (args.length !== 1) throw new UsageError('snapshot export: expected VOLUME@SNAPSHOT');
      if (v.input !== undefined) throw new UsageError('snapshot export: option --input does not apply');
      await runExport(path, args[0]!, v.since, v.output, v.json ?? false);
    } else {
      if (args.length !== 1) throw new UsageError('volume import: expected NAME');
      if (v.output !== undefined || v.since !== undefined) throw new UsageError('volume import: options --output and --since do not apply');
      await runImport(path, args[0]!, v.input, v.json ?? false);
    }
    return ExitCode.Ok;
  } catch (e) {
    if (e instanceof UsageError) return usage(e.message);
    if (e instanceof ControlUnreachableError || e instanceof ControlCallError) return controlFailure(e);
    if (e instanceof StreamFormatError) {
      process.stderr.write(`snapnbd: ${e.code}: ${e.message}\n`);
      return ExitCode.ServerError;
    }
    const err = e as NodeJS.ErrnoException;
    if (typeof err?.code === 'string') {
      // A file that cannot be opened, or a closed pipe on the other side.
      process.stderr.write(`snapnbd: ${err.message}\n`);
      return ExitCode.ServerError;
    }
    throw e;
  }
}

function usage(message: string): number {
  return usageFailure(message);
}
