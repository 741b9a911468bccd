// JavaScript CPU per request of one NBD session (decoder, session, dispatch, reply writer, the
// memory budget), with no kernel in the way: the session runs over an in-memory Duplex, a client in
// this process keeps `--depth` requests in flight, and the device answers at once. Compares
// builds in one process: `--trees A,B` loads each checkout's dist/ (`npm run build` first) and
// alternates them, so load from other processes falls on both alike. The client's own work is the
// same for every tree, so differences between trees are the server's.
//   node --import tsx bench/micro/session-requests.ts [--trees DIR,DIR] [--reps 30] [--requests N]
//     [--workloads read-4k,read-1m,write-4k] [--depth 32] [--budget BYTES (0: none)]
// `--count`: instead of CPU, the async resources (promises, timers, immediates, ticks, write
// requests) created per request, counted by async_hooks: exact, whatever the load.
import { createHook } from 'node:async_hooks';
import { join, resolve } from 'node:path';
import { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import { median, round } from '../lib/stats.ts';

const EXPORT_BYTES = 2 ** 30;
/** The server's default (src/server/memory-budget.ts DEFAULT_MEMORY_BUDGET). */
const BUDGET = 512 * 2 ** 20;
const REQUEST_MAGIC = 0x25609513;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_EXPORT_NAME = 1;
const OPT_STRUCTURED_REPLY = 8;
const CMD_READ = 0;
const CMD_WRITE = 1;
/** Greeting (18) + the STRUCTURED_REPLY ack (20) + EXPORT_NAME's size and flags (10, NO_ZEROES). */
const HANDSHAKE_REPLY_BYTES = 18 + 20 + 10;
const STRUCTURED_DATA_OVERHEAD = 20 + 8;
const SIMPLE_REPLY_BYTES = 16;

const WORKLOADS: Record<string, { cmd: number; length: number; requests: number }> = {
  'read-4k': { cmd: CMD_READ, length: 4096, requests: 20_000 },
  'read-1m': { cmd: CMD_READ, length: 2 ** 20, requests: 1_000 },
  'write-4k': { cmd: CMD_WRITE, length: 4096, requests: 20_000 },
};

const { values: v } = parseArgs({
  options: { trees: { type: 'string' }, reps: { type: 'string' }, requests: { type: 'string' }, workloads: { type: 'string' }, depth: { type: 'string' }, budget: { type: 'string' }, count: { type: 'boolean' } },
});
const trees = (v.trees ?? join(import.meta.dirname, '..', '..')).split(',').map((t) => resolve(t));
const reps = Number(v.reps ?? 30);
const depth = Number(v.depth ?? 32);
const budgetBytes = v.budget !== undefined ? Number(v.budget) : BUDGET;
const names = (v.workloads ?? Object.keys(WORKLOADS).join(',')).split(',');

type SessionCtor = new (socket: Duplex, opts: Record<string, unknown>) => { start(): void; destroy(): void; closed: Promise<void> };
interface Build { tree: string; Session: SessionCtor; newBudget: (() => unknown) | null }
const builds: Build[] = [];
for (const tree of trees) {
  const { Session } = (await import(join(tree, 'dist/server/session.js'))) as { Session: SessionCtor };
  const { setLogLevel } = (await import(join(tree, 'dist/util/log.js'))) as { setLogLevel(l: string): void };
  setLogLevel('warn');
  // Trees before the memory budget have no such module; their sessions ignore the option.
  const m = (await import(join(tree, 'dist/server/memory-budget.js')).catch(() => null)) as
    { MemoryBudget: new (limit: number) => unknown } | null;
  builds.push({ tree, Session, newBudget: m && budgetBytes > 0 ? () => new m.MemoryBudget(budgetBytes) : null });
}

const device = {
  size: EXPORT_BYTES, readOnly: false, preferredBlockSize: 4096, multiConn: true,
  read: (): Promise<void> => Promise.resolve(),
  write: (): Promise<void> => Promise.resolve(),
  trim: (): Promise<void> => Promise.resolve(),
  zero: (): Promise<void> => Promise.resolve(),
  flush: (): Promise<void> => Promise.resolve(),
  cache: (): Promise<void> => Promise.resolve(),
  extents: (_o: number, length: number) => Promise.resolve([{ length, hole: false, zero: false }]),
};
const exp = { name: 'bench', description: 'bench', device };
const counters = { connections: 0, requests: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };
const exportsResolver = {
  list: () => [exp],
  lookup: (n: string) => (n === 'bench' ? exp : undefined),
  acquire: (n: string) => (n === 'bench' ? { ...exp, counters, release: () => undefined } : undefined),
};

function option(opt: number, data: Buffer): Buffer {
  const b = Buffer.alloc(16 + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(opt, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, 16);
  return b;
}

/** One session, `requests` requests of one kind at `depth` in flight; resolves with the CPU µs used. */
function runSession(b: Build, w: { cmd: number; length: number }, requests: number): Promise<number> {
  const replyBytes = w.cmd === CMD_READ ? STRUCTURED_DATA_OVERHEAD + w.length : SIMPLE_REPLY_BYTES;
  const payload = w.cmd === CMD_WRITE ? Buffer.alloc(w.length, 0x5a) : null;
  const slots = EXPORT_BYTES / w.length;
  // Requests pre-encoded in a ring, each followed by its payload: the client's per-request work is a push.
  const ring: Buffer[] = [];
  for (let i = 0; i < 1024; i++) {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(w.cmd, 6);
    h.writeBigUInt64BE(BigInt(i), 8);
    h.writeBigUInt64BE(BigInt(((i * 7919) % slots) * w.length), 16);
    h.writeUInt32BE(w.length, 24);
    ring.push(payload ? Buffer.concat([h, payload]) : h);
  }
  return new Promise((resolveRun, reject) => {
    let received = 0;
    let sent = 0;
    let done = 0;
    let started = false;
    let cpu0: NodeJS.CpuUsage = process.cpuUsage();
    let toSend = 0;
    let scheduled = false;
    const pipe = new Duplex({
      read() {},
      writev(chunks, cb) {
        for (const c of chunks) onServerBytes((c.chunk as Buffer).length);
        cb();
      },
      write(chunk: Buffer, _e, cb) {
        onServerBytes(chunk.length);
        cb();
      },
    });
    const sendSome = (): void => {
      scheduled = false;
      const n = Math.min(toSend, requests - sent);
      toSend = 0;
      if (n <= 0) return;
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) parts.push(ring[(sent + i) % ring.length]!);
      sent += n;
      pipe.push(parts.length === 1 ? parts[0] : Buffer.concat(parts));
    };
    const onServerBytes = (n: number): void => {
      received += n;
      if (!started) {
        if (received < HANDSHAKE_REPLY_BYTES) return;
        started = true;
        received -= HANDSHAKE_REPLY_BYTES;
        cpu0 = process.cpuUsage();
        toSend = depth;
      }
      const replies = Math.floor(received / replyBytes);
      received -= replies * replyBytes;
      done += replies;
      toSend += replies;
      if (done >= requests) {
        const c = process.cpuUsage(cpu0);
        session.destroy();
        resolveRun(c.user + c.system);
        return;
      }
      if (!scheduled && toSend > 0) {
        scheduled = true;
        setImmediate(sendSome);
      }
    };
    const session = new b.Session(pipe, {
      exports: exportsResolver, label: 'bench', isShuttingDown: () => false, budget: b.newBudget ? b.newBudget() : null,
    });
    session.start();
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3, 0); // FIXED_NEWSTYLE | NO_ZEROES
    pipe.push(Buffer.concat([flags, option(OPT_STRUCTURED_REPLY, Buffer.alloc(0)), option(OPT_EXPORT_NAME, Buffer.from('bench'))]));
    pipe.on('error', reject);
  });
}

/** Async resources created per request, by type, over one run of each build. */
async function countResources(spec: { cmd: number; length: number }, requests: number): Promise<void> {
  for (const b of builds) {
    await runSession(b, spec, requests); // the same warm state as a measured run
    const counts = new Map<string, number>();
    const hook = createHook({ init: (_id, type) => void counts.set(type, (counts.get(type) ?? 0) + 1) });
    hook.enable();
    await runSession(b, spec, requests);
    hook.disable();
    const per = [...counts].sort((x, y) => y[1] - x[1]).map(([t, n]) => `${t} ${round(n / requests, 3)}`).join(', ');
    process.stdout.write(`  ${per}  ${b.tree}\n`);
  }
}

for (const w of names) {
  const spec = WORKLOADS[w];
  if (!spec) throw new Error(`unknown workload ${w}`);
  const requests = v.requests !== undefined ? Number(v.requests) : spec.requests;
  if (v.count) {
    process.stdout.write(`${w}: async resources per request\n`);
    await countResources(spec, requests);
    continue;
  }
  for (const b of builds) await runSession(b, spec, requests); // warm up the JIT
  // Interleaved: each repetition runs every build once, so load changes hit them alike; the
  // order alternates, so no build always follows the same one (GC debt, caches).
  const perRequest = builds.map((): number[] => []);
  for (let rep = 0; rep < reps; rep++) {
    const order = [...builds.keys()];
    if (rep % 2 === 1) order.reverse();
    for (const i of order) perRequest[i]!.push((await runSession(builds[i]!, spec, requests)) / requests);
  }
  for (const [i, b] of builds.entries()) {
    const xs = perRequest[i]!;
    const ratio = i === 0 ? '' : `, paired ratio to the first ${round(median(xs.map((x, r) => x / perRequest[0]![r]!)), 3)}`;
    process.stdout.write(`${w}: median ${round(median(xs), 3)} min ${round(Math.min(...xs), 3)} µs CPU per request${ratio}  ${b.tree}\n`);
  }
}
