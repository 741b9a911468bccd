// CPU per request of the NBD server layer alone (decoder, session, dispatch, reply writer), for
// this checkout's build or another one's (`--tree`, to compare builds; each runs its own dist/,
// so `npm run build` first). The server runs in this
// process over a device that answers at once (no storage: its read path is measured elsewhere),
// fio (`--ioengine=nbd`, a child process) sends a fixed number of requests over a unix socket,
// and process.cpuUsage() counts this process's CPU around each fio run: a count of work, not a
// rate, so it holds up on a loaded machine better than MB/s does.
//   node --import tsx bench/micro/server-requests.ts [--tree DIR] [--reps 5] [--workloads read-4k,read-1m,write-4k]
//     [--budget BYTES (0: none)]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { median, round } from '../lib/stats.ts';

const EXPORT_BYTES = 256 * 2 ** 20;
/** The server's default (src/server/memory-budget.ts DEFAULT_MEMORY_BUDGET; older trees ignore it). */
const BUDGET = 512 * 2 ** 20;
const WORKLOADS: Record<string, string[]> = {
  'read-4k': ['--rw=randread', '--bs=4k', '--iodepth=32', '--number_ios=65536'],
  'read-1m': ['--rw=read', '--bs=1M', '--iodepth=8', '--loops=8'],
  'write-4k': ['--rw=randwrite', '--bs=4k', '--iodepth=32', '--number_ios=65536'],
};

const { values: v } = parseArgs({ options: { tree: { type: 'string' }, reps: { type: 'string' }, workloads: { type: 'string' }, budget: { type: 'string' } } });
const tree = resolve(v.tree ?? join(import.meta.dirname, '..', '..'));
const reps = Number(v.reps ?? 5);
const names = (v.workloads ?? Object.keys(WORKLOADS).join(',')).split(',');

const { NbdServer } = (await import(join(tree, 'dist/server/listener.js'))) as typeof import('../../src/server/listener.ts');
const { setLogLevel } = (await import(join(tree, 'dist/util/log.js'))) as typeof import('../../src/util/log.ts');
setLogLevel('warn');

// A device that answers every request at once, asynchronously like real storage.
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
const counters = { connections: 0, requests: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };
const exp = { name: 'bench', description: 'bench', device };
const exportsResolver = {
  list: () => [exp],
  lookup: (n: string) => (n === 'bench' || n === '' ? exp : undefined),
  acquire: (n: string) => (n === 'bench' || n === '' ? { ...exp, counters, release: () => undefined } : undefined),
};

const dir = mkdtempSync(join(tmpdir(), 'snapnbd-srvreq-'));
const sock = join(dir, 'nbd.sock');
const server = new NbdServer({ exports: exportsResolver, maxConnections: 0, memoryBudget: v.budget !== undefined ? Number(v.budget) : BUDGET } as ConstructorParameters<typeof NbdServer>[0]);
await server.listen({ kind: 'unix', path: sock });

/** fio in a child, asynchronously: the server runs on this event loop meanwhile. */
function fio(args: string[]): Promise<void> {
  return new Promise((res, rej) => {
    import('node:child_process').then(({ execFile }) => {
      execFile('fio', ['--name=m', '--ioengine=nbd', `--uri=nbd+unix:///bench?socket=${sock}`, '--size=256M', ...args, '--output=/dev/null'],
        (e) => (e ? rej(e) : res()));
    }, rej);
  });
}

try {
  execFileSync('fio', ['--version']);
  await fio(['--rw=randread', '--bs=64k', '--iodepth=8', '--number_ios=8000']); // warm up the JIT
  const got = new Map<string, { us: number[]; requests: number }>();
  for (let rep = 0; rep < reps; rep++) {
    for (const w of names) {
      const args = WORKLOADS[w];
      if (!args) throw new Error(`unknown workload ${w}`);
      const r0 = counters.requests;
      const c0 = process.cpuUsage();
      await fio(args);
      const c = process.cpuUsage(c0);
      const n = counters.requests - r0;
      const e = got.get(w) ?? { us: [], requests: n };
      e.us.push((c.user + c.system) / n);
      got.set(w, e);
      process.stderr.write(`rep ${rep + 1} ${w}: ${n} requests, ${round((c.user + c.system) / n, 2)} µs CPU each (user ${round(c.user / n, 2)})\n`);
    }
  }
  for (const [w, e] of got) process.stdout.write(`${tree} ${w}: median ${round(median(e.us), 2)} µs CPU per request (${e.us.map((x) => round(x, 1)).join(', ')})\n`);
} finally {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
