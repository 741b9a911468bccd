// Listeners (TCP and unix sockets) and the set of live sessions. Thin: every connection becomes
// a Session; stopping the server stops accepting, lets in-flight requests finish, then returns.
import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { log } from '../util/log.ts';
import type { ExportResolver } from './exports.ts';
import { normalizeAddress } from './access.ts';
import { MemoryBudget } from './memory-budget.ts';
import { ReceiveSlabs, SlabPool, readIntoSlabs } from './receive-slabs.ts';
import { Session, type SessionInfo, type SessionOptions } from './session.ts';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/** Parses `HOST:PORT`, `[::1]:PORT` or `unix:/path`. */
export function parseListenAddress(s: string): ListenAddress | null {
  if (s.startsWith('unix:')) {
    const path = s.slice(5);
    return path.length > 0 ? { kind: 'unix', path } : null;
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  if (!m) return null;
  const port = Number(m[3]);
  if (port > 65535) return null;
  return { kind: 'tcp', host: m[1] ?? m[2]!, port };
}

export function formatListenAddress(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export interface NbdServerOptions {
  exports: ExportResolver;
  /** 0 = unlimited. */
  maxConnections: number;
  /** Connections from one address (unix sockets: not limited); 0 = unlimited. */
  maxConnectionsPerClient?: number;
  /** Server-wide budget of buffered request and reply bytes (memory-budget.ts); 0 = none. */
  memoryBudget?: number;
  session?: Partial<Pick<SessionOptions, 'handshakeTimeoutMs' | 'handshakeMsPerListedExport' | 'maxInFlight' | 'maxInFlightBytes' | 'stallTimeoutMs' | 'idleTimeoutMs' | 'metrics'>>;
  /** TLS settings and access rules now (getters: SIGHUP swaps them without dropping connections). */
  tls?: SessionOptions['tls'];
  access?: SessionOptions['access'];
}

export class NbdServer {
  private readonly servers: net.Server[] = [];
  private readonly sessions = new Set<Session>();
  private readonly opts: NbdServerOptions;
  private stopping = false;
  private readonly budget: MemoryBudget | null;
  private readonly perAddress = new Map<string, number>();
  /** Free receive slabs, shared by the connections (receive-slabs.ts). */
  private readonly slabPool = new SlabPool();
  /** Bound addresses (port 0 resolved). */
  readonly addresses: ListenAddress[] = [];
  /** Connections accepted and refused since start (the metrics endpoint). */
  readonly connectionCounts = { accepted: 0, refused: 0 };

  constructor(opts: NbdServerOptions) {
    this.opts = opts;
    this.budget = opts.memoryBudget ? new MemoryBudget(opts.memoryBudget) : null;
  }

  /** Bytes of the memory budget held now (tests, stats). */
  get budgetUsed(): number {
    return this.budget?.used ?? 0;
  }

  /** Every live connection: peer, identity, TLS version, export. */
  connections(): SessionInfo[] {
    return [...this.sessions].map((s) => s.info());
  }

  async listen(addr: ListenAddress): Promise<ListenAddress> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, pauseOnConnect: true }, (socket) => this.accept(socket, addr));
    server.on('error', (e) => log.error(`listener ${formatListenAddress(addr)}`, e));
    if (addr.kind === 'unix' && existsSync(addr.path)) await removeStaleSocket(addr.path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (addr.kind === 'unix') server.listen(addr.path, resolve);
      else server.listen(addr.port, addr.host, resolve);
    });
    this.servers.push(server);
    const a = server.address();
    const bound: ListenAddress = addr.kind === 'unix' || a === null || typeof a === 'string'
      ? addr
      : { kind: 'tcp', host: addr.host, port: a.port };
    this.addresses.push(bound);
    return bound;
  }

  private accept(socket: net.Socket, addr: ListenAddress): void {
    const label = addr.kind === 'unix' ? `unix:${addr.path}#${this.sessions.size}` : `${socket.remoteAddress}:${socket.remotePort}`;
    if (this.stopping || (this.opts.maxConnections > 0 && this.sessions.size >= this.opts.maxConnections)) {
      log.warn(`${label}: refused: ${this.stopping ? 'server stopping' : `at --max-connections ${this.opts.maxConnections}`}`);
      socket.destroy();
      this.connectionCounts.refused++;
      return;
    }
    const address = addr.kind === 'unix' ? null : normalizeAddress(socket.remoteAddress ?? 'unknown');
    const perClient = this.opts.maxConnectionsPerClient ?? 0;
    if (address !== null && perClient > 0 && (this.perAddress.get(address) ?? 0) >= perClient) {
      log.warn(`${label}: refused: ${address} has ${perClient} connections (--max-connections-per-client)`);
      socket.destroy();
      return;
    }
    if (address !== null) this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    this.connectionCounts.accepted++;
    socket.on('error', () => {}); // reported by the session; never let it escape
    // Paused at accept (pauseOnConnect), read by the session through reused slabs.
    const slabs = new ReceiveSlabs(this.slabPool);
    const conn = readIntoSlabs(socket, slabs, true);
    conn.on('error', () => {});
    const session = new Session(conn, {
      slabs,
      budget: this.budget,
      exports: this.opts.exports,
      label,
      isShuttingDown: () => this.stopping,
      remoteAddress: addr.kind === 'unix' ? 'unix' : socket.remoteAddress ?? 'unknown',
      ...(this.opts.tls ? { tls: this.opts.tls } : {}),
      ...(this.opts.access ? { access: this.opts.access } : {}),
      ...this.opts.session,
    });
    this.sessions.add(session);
    void session.closed.then(() => {
      this.sessions.delete(session);
      if (address === null) return;
      const n = (this.perAddress.get(address) ?? 1) - 1;
      if (n === 0) this.perAddress.delete(address);
      else this.perAddress.set(address, n);
    });
    session.start();
  }

  /** Stop accepting, let each session finish its in-flight requests, close them. */
  async stop(): Promise<void> {
    this.stopping = true;
    const closing = this.servers.map((s) => new Promise<void>((r) => s.close(() => r())));
    await Promise.all([...this.sessions].map((s) => s.shutdown('server stopping')));
    await Promise.all(closing);
  }

  /** Immediately drop every connection. */
  destroyAll(): void {
    for (const s of this.sessions) s.destroy();
    for (const s of this.servers) s.close();
  }
}

/** A socket file left by a crashed server is replaced; one a live server answers on is an error. */
async function removeStaleSocket(path: string): Promise<void> {
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path} is in use by a running server`);
  unlinkSync(path);
}
