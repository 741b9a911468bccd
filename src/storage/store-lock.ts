// One store, one process: the lock every way into a store takes (openStore, checkStore). It is a
// Linux abstract-namespace Unix socket named after the data dir's device and inode, held by
// listening on it. Only one socket can listen on a name, the kernel frees it when the process
// dies (kill -9 included) and no file is left behind, so a crash never blocks a restart and a
// live holder is never overridden. A second opener connects to the name and the holder answers
// with who it is, so the refusal names it. README.md ("One store, one process") weighs the
// alternatives and states the limits.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { realpath, stat } from 'node:fs/promises';
import { realFileIo, type FileIo } from './file-io.ts';
import { StoreError, StoreErrorCode } from './types.ts';

/** How long a second opener waits for the holder to say who it is (a busy event loop answers late). */
export const HOLDER_QUERY_TIMEOUT_MS = 2000;
/** A holder's answer is one short JSON line; anything longer is not ours. */
export const HOLDER_ANSWER_MAX_BYTES = 16 * 1024;
/** Binding retries when the holder vanished between our failed bind and our query. */
export const LOCK_ATTEMPTS = 3;

const DEFAULT_COMMAND = 'the snapnbd storage engine';

/** What a holder says about itself. */
export interface StoreHolder {
  pid: number;
  /** What holds the store: `snapnbd serve`, `snapnbd check`, or a library user's own words. */
  command: string;
  /** The data dir as the holder resolved it. */
  dataDir: string;
  /** ISO 8601 UTC. */
  since: string;
  control: string | null;
  listeners: string[];
}

/** The part of a holder's answer that changes while it runs (serve binds its listeners after opening). */
export interface HolderDetails {
  command?: string;
  control?: string | null;
  listeners?: string[];
}

export interface StoreLock {
  /** The data dir's real path. */
  readonly dataDir: string;
  /** Frees the store for the next opener; idempotent. */
  release(): Promise<void>;
}

/** The abstract socket name of the store in `dataDir`: the same directory by any path gives the same name. */
export async function storeLockName(dataDir: string): Promise<{ name: string; real: string }> {
  const real = await realpath(dataDir);
  const st = await stat(real, { bigint: true });
  return { name: `\0snapnbd-store-${st.dev}-${st.ino}`, real };
}

/**
 * Takes the store lock of `dataDir` (which must exist) or throws StoreError STORE_LOCKED naming
 * the data dir and the holder. `describe` is asked each time another opener wants to know who
 * holds the store.
 */
export async function acquireStoreLock(dataDir: string, describe: () => HolderDetails = () => ({})): Promise<StoreLock> {
  const { name, real } = await storeLockName(dataDir);
  const since = new Date().toISOString();
  for (let attempt = 1; ; attempt++) {
    const server = createServer((s) => answer(s, { pid: process.pid, command: DEFAULT_COMMAND, dataDir: real, since, control: null, listeners: [], ...describe() }));
    const bound = await listen(server, name);
    if (bound === true) {
      server.unref(); // the lock never keeps a process alive; the kernel frees it at exit
      let released = false;
      return {
        dataDir: real,
        release: () => {
          if (released) return Promise.resolve();
          released = true;
          return new Promise<void>((resolve) => server.close(() => resolve()));
        },
      };
    }
    if (bound.code !== 'EADDRINUSE') throw new StoreError(StoreErrorCode.StoreLocked, `cannot lock the store in ${where(dataDir, real)}: ${bound.message}`, { cause: bound });
    const holder = await queryHolder(name);
    if (holder === 'gone' && attempt < LOCK_ATTEMPTS) continue; // it just exited: try again
    throw new StoreError(StoreErrorCode.StoreLocked, refusal(dataDir, real, holder));
  }
}

/**
 * The lock of the store in `dataDir` as `fileIo` sees it: none for a simulated file system (a
 * test's own world, whose paths are not the host's; its "crashes" leave the store open in the
 * same process), the real lock otherwise.
 */
export function lockStoreFor(dataDir: string, fileIo: FileIo, describe: () => HolderDetails): Promise<StoreLock | null> {
  return fileIo === realFileIo ? acquireStoreLock(dataDir, describe) : Promise.resolve(null);
}

function where(dataDir: string, real: string): string {
  return dataDir === real ? real : `${dataDir} (${real})`;
}

/** The refusal: the data dir and who holds it; the only way forward offered is stopping the holder. */
export function refusal(dataDir: string, real: string, holder: StoreHolder | 'gone' | 'silent'): string {
  const head = `the store in ${where(dataDir, real)} is in use`;
  const tail = 'a store belongs to one process at a time; stop that process first';
  if (holder === 'gone' || holder === 'silent') {
    return `${head} by another process that did not say who it is within ${HOLDER_QUERY_TIMEOUT_MS} ms; ${tail}`;
  }
  const who = holder.pid === process.pid ? `this process (PID ${holder.pid})` : `process ${holder.pid}`;
  const parts = [`${holder.command} since ${holder.since}`];
  if (holder.control) parts.push(`control socket ${holder.control}`);
  for (const l of holder.listeners) parts.push(l);
  return `${head} by ${who} (${parts.join(', ')}); ${tail}`;
}

function listen(server: Server, name: string): Promise<true | NodeJS.ErrnoException> {
  return new Promise((resolve) => {
    server.once('error', resolve);
    server.listen({ path: name }, () => {
      server.removeListener('error', resolve);
      resolve(true);
    });
  });
}

function answer(s: Socket, holder: StoreHolder): void {
  s.unref();
  s.on('error', () => undefined); // the asker may hang up first
  s.on('data', () => undefined); // it has nothing to say; never buffer it
  s.end(JSON.stringify(holder) + '\n');
}

/** Asks the holder who it is: its answer, 'gone' (nobody listens any more) or 'silent'. */
function queryHolder(name: string): Promise<StoreHolder | 'gone' | 'silent'> {
  return new Promise((resolve) => {
    const s = createConnection({ path: name });
    const chunks: Buffer[] = [];
    let len = 0;
    const done = (r: StoreHolder | 'gone' | 'silent'): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done('silent'), HOLDER_QUERY_TIMEOUT_MS);
    s.on('data', (b: Buffer) => {
      len += b.length;
      if (len > HOLDER_ANSWER_MAX_BYTES) return done('silent');
      chunks.push(b);
    });
    s.on('end', () => done(parseHolder(Buffer.concat(chunks).toString('utf8'))));
    s.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? 'gone' : 'silent'));
  });
}

/** A holder's answer, checked field by field (any local process can bind an abstract name). */
export function parseHolder(text: string): StoreHolder | 'silent' {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'silent';
  }
  if (typeof v !== 'object' || v === null) return 'silent';
  const o = v as Record<string, unknown>;
  const str = (x: unknown): x is string => typeof x === 'string' && x.length > 0 && x.length < 4096;
  if (!Number.isSafeInteger(o.pid) || !str(o.command) || !str(o.dataDir) || !str(o.since)) return 'silent';
  if (o.control !== null && !str(o.control)) return 'silent';
  if (!Array.isArray(o.listeners) || !o.listeners.every(str)) return 'silent';
  return { pid: o.pid as number, command: o.command, dataDir: o.dataDir, since: o.since, control: o.control, listeners: o.listeners };
}
