// Differential peers for interop tests: the same client script runs against snapnbd and against
// `nbdkit memory` (the reference behaviour), and both must give the same answers. Every spawned
// nbdkit is killed when the test stops it, when the worker exits, and by --exit-with-parent.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { startServer, tempDir, type RunningServer, type ServerOptions } from './server.ts';

export const PEER_KINDS = ['snapnbd', 'nbdkit'] as const;
export type PeerKind = (typeof PEER_KINDS)[number];

/** The name of the volume every peer serves by default (nbdkit memory answers any name). */
export const PEER_VOLUME = 'v';
export const DEFAULT_PEER_SIZE = '64M';

/** nbdkit 1.32 cannot report a port it picked itself: we pick one, and retry when it is taken. */
const NBDKIT_START_ATTEMPTS = 5;
const NBDKIT_READY_TIMEOUT_MS = 30_000;
const PIDFILE_POLL_MS = 20;
const STOP_GRACE_MS = 10_000;

export interface Peer {
  kind: PeerKind;
  port: number;
  /** nbd://127.0.0.1:PORT/NAME; default: the peer's test volume. */
  uri(exportName?: string): string;
  /** Stop the peer (SIGTERM, then SIGKILL); returns the exit code. Idempotent. */
  stop(): Promise<number | null>;
  /** The snapnbd server, when kind is 'snapnbd'. */
  server?: RunningServer;
}

export interface PeerOptions {
  /** Size of the test volume, with a K/M/G suffix (both peers understand the same suffixes). */
  size?: string;
  readOnly?: boolean;
  /** Extra snapnbd `serve` options (ignored by nbdkit). */
  snapnbd?: ServerOptions;
}

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });

export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  srv.close();
  await once(srv, 'close');
  if (addr === null || typeof addr === 'string') throw new Error('no TCP address');
  return addr.port;
}

/** `nbdkit memory SIZE` on 127.0.0.1 (any other plugin via `plugin`). */
export async function startNbdkit(opts: { size?: string; readOnly?: boolean; plugin?: string[] } = {}): Promise<Peer> {
  const plugin = opts.plugin ?? ['memory', opts.size ?? DEFAULT_PEER_SIZE];
  let lastErr = '';
  for (let attempt = 0; attempt < NBDKIT_START_ATTEMPTS; attempt++) {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'snapnbd-nbdkit-'));
    const pidfile = join(dir, 'pid');
    const args = ['-f', '--exit-with-parent', '-p', String(port), '-i', '127.0.0.1', '-P', pidfile];
    if (opts.readOnly) args.push('-r');
    const proc = spawn('nbdkit', [...args, ...plugin], { stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(proc);
    let stderr = '';
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const exited = new Promise<void>((r) => proc.once('exit', () => { live.delete(proc); r(); }));
    // nbdkit writes the pidfile only after its sockets are bound and listening.
    const deadline = Date.now() + NBDKIT_READY_TIMEOUT_MS;
    while (!existsSync(pidfile) && proc.exitCode === null && proc.signalCode === null && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, PIDFILE_POLL_MS));
    }
    if (existsSync(pidfile) && proc.exitCode === null) {
      let stopped: Promise<number | null> | null = null;
      return {
        kind: 'nbdkit',
        port,
        uri: () => `nbd://127.0.0.1:${port}/`,
        stop() {
          stopped ??= (async () => {
            if (proc.exitCode === null && proc.signalCode === null) {
              proc.kill('SIGTERM');
              const t = setTimeout(() => proc.kill('SIGKILL'), STOP_GRACE_MS);
              await exited;
              clearTimeout(t);
            }
            rmSync(dir, { recursive: true, force: true });
            return proc.exitCode;
          })();
          return stopped;
        },
      };
    }
    proc.kill('SIGKILL');
    await exited;
    rmSync(dir, { recursive: true, force: true });
    lastErr = stderr;
    if (!/in use/i.test(stderr)) break;
  }
  throw new Error(`nbdkit did not start: ${lastErr}`);
}

/** snapnbd serving one volume PEER_VOLUME of the given size. */
export async function startSnapnbd(opts: PeerOptions = {}): Promise<Peer> {
  const extra = opts.snapnbd ?? {};
  const args = ['--volume', `${PEER_VOLUME}=${opts.size ?? DEFAULT_PEER_SIZE}`];
  if (opts.readOnly) args.push('--read-only');
  // Our own data dir unless the test brings one: removed even when the server fails to start.
  const ownDir = extra.dataDir === undefined;
  const dataDir = extra.dataDir ?? tempDir();
  let server: RunningServer;
  try {
    server = await startServer({ ...extra, dataDir, args: [...args, ...(extra.args ?? [])] });
  } catch (e) {
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    throw e;
  }
  let stopped: Promise<number | null> | null = null;
  return {
    kind: 'snapnbd',
    port: server.port,
    server,
    uri: (name = PEER_VOLUME) => server.uri(name),
    stop() {
      stopped ??= server.stop().finally(() => {
        if (ownDir) rmSync(dataDir, { recursive: true, force: true });
      });
      return stopped;
    },
  };
}

export async function startPeer(kind: PeerKind, opts: PeerOptions = {}): Promise<Peer> {
  return kind === 'snapnbd' ? startSnapnbd(opts) : startNbdkit(opts);
}

/**
 * Runs one test body against each peer in turn (a fresh peer each time) and returns the bodies'
 * results in order, so a test can also compare what the peers answered.
 */
export async function withPeers<T>(
  kinds: readonly PeerKind[],
  body: (uri: string, peer: Peer) => Promise<T>,
  opts: PeerOptions = {},
): Promise<T[]> {
  const results: T[] = [];
  for (const kind of kinds) {
    const peer = await startPeer(kind, opts);
    try {
      results.push(await body(peer.uri(), peer));
    } catch (e) {
      // Name the peer: "which server failed" is the first question when a differential test fails.
      if (e instanceof Error) e.message = `[${kind}] ${e.message}`;
      throw e;
    } finally {
      await peer.stop();
    }
  }
  return results;
}
