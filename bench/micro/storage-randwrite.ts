// 4 KiB random writes through the store, in process (no NBD, no fio): CPU time, garbage-collector
// time and GC count per write, for one or several checkouts' storage engines loaded side by side
// (`--trees A,B` imports each tree's dist/storage/index.js: `npm run build` first; tsx's output
// would wrap every closure in a naming call) and alternated in short runs, so load from other
// processes falls on every tree alike. Two phases, as in the harness's randwrite-4k:
//   first: a fresh volume over a backing file (the bench's image): most writes are the first to
//          their chunk and merge it with the backing file into a new slot;
//   over:  the same volume once written whole: every write goes in place.
// `--prof DIR` writes one CPU profile per tree and phase (summarise with bench/profile-summary.ts);
// `--alloc` prints the functions that allocate most (V8's sampling heap profiler) per tree and phase;
// `--count` the file-system calls and async resources (promises...) per write: exact, whatever the load.
//   node --import tsx bench/micro/storage-randwrite.ts [--trees DIR,DIR] [--mib 256] [--writes 20000]
//     [--rounds 5] [--phases first,over] [--dir TMPDIR] [--prof DIR] [--alloc] [--count] [--io auto|sync|pool|null]
//     [--flush: the commit that makes the writes durable counted in]
import { createHook } from 'node:async_hooks';
import fs, { writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { median, round } from '../lib/stats.ts';

const MiB = 2 ** 20;
const BLOCK = 4096;
const QD = 32;
/** Sampling interval of `--alloc` (bytes): small enough that a per-write allocation shows. */
const ALLOC_SAMPLE_BYTES = 1024;
const ALLOC_TOP = 15;

const { values: v } = parseArgs({
  options: {
    trees: { type: 'string' }, mib: { type: 'string' }, writes: { type: 'string' }, rounds: { type: 'string' },
    phases: { type: 'string' }, dir: { type: 'string' }, prof: { type: 'string' }, alloc: { type: 'boolean' },
    count: { type: 'boolean' }, io: { type: 'string' }, flush: { type: 'boolean' },
  },
});
const trees = (v.trees ?? join(import.meta.dirname, '..', '..')).split(',').map((t) => resolve(t));
const size = Number(v.mib ?? 256) * MiB;
const writes = Number(v.writes ?? 20_000);
const rounds = Number(v.rounds ?? 5);
const phases = (v.phases ?? 'first,over').split(',') as ('first' | 'over')[];

interface Dev { write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void> }
interface Store {
  createVolume(spec: { name: string; size?: number; backing?: string }): Promise<unknown>;
  head(name: string): Dev;
  flush(): Promise<void>;
  close(): Promise<void>;
  autoCompact?: boolean;
}
type Open = (dir: string) => Promise<Store>;
// `--count`: calls of each file-system function the stores use, per write (before the trees load,
// so their `node:fs` imports see the counting wrappers).
const FS_COUNTED = ['read', 'readSync', 'write', 'writeSync', 'writev', 'writevSync', 'fdatasync', 'fstat'] as const;
const fsCalls = new Map<string, number>();
if (v.count) {
  const f = fs as unknown as Record<string, (...a: unknown[]) => unknown>;
  for (const name of FS_COUNTED) {
    const orig = f[name]!;
    f[name] = function (this: unknown, ...a: unknown[]) {
      fsCalls.set(name, (fsCalls.get(name) ?? 0) + 1);
      return orig.apply(this, a);
    };
  }
  syncBuiltinESMExports();
}
// `--io null`: synchronous writes that write nothing (writeSync and writevSync return their length),
// so what is left is the JavaScript of the write path and its bookkeeping, without the ~50 % of
// the CPU (and most of the noise of a shared machine) that the kernel's page cache takes. Reads
// stay real: the backing file is there, segment files read zeros where nothing was written.
if (v.io === 'null') {
  const f = fs as unknown as Record<string, (...a: unknown[]) => unknown>;
  f['writeSync'] = (_fd: unknown, _buf: unknown, _off: unknown, len: unknown) => len;
  f['writevSync'] = (_fd: unknown, pieces: unknown) => (pieces as Buffer[]).reduce((n, b) => n + b.length, 0);
  syncBuiltinESMExports();
}
const opens: Open[] = [];
for (const tree of trees) {
  const m = (await import(join(tree, 'dist/storage/index.js'))) as { openCowStore: Open };
  opens.push(m.openCowStore);
  // `--io sync|pool`: pin file-io.ts's choice of synchronous I/O or the thread pool (default
  // `auto`: its own rule, which a loaded machine's preemption can push to the pool).
  if (v.io === 'sync' || v.io === 'pool' || v.io === 'null') {
    const io = (await import(join(tree, 'dist/storage/file-io.js'))) as Record<string, { next(): boolean; record(): void }>;
    for (const s of [io['readStrategy']!, io['writeStrategy']!]) {
      const sync = v.io !== 'pool';
      s.next = () => sync;
      s.record = () => undefined;
    }
  }
}

let gcMs = 0;
let gcCount = 0;
let gcMajor = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gcMs += e.duration;
    gcCount++;
    if ((((e as unknown as { detail?: { kind?: number } }).detail)?.kind ?? 0) !== constants.NODE_PERFORMANCE_GC_MINOR) gcMajor++;
  }
}).observe({ entryTypes: ['gc'] });

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

interface Sample { cpuUs: number; gcUs: number; gcs: number; majors: number }

async function writeRandom(dev: Dev, seed: number): Promise<void> {
  const rand = rng(seed);
  const buf = Buffer.alloc(BLOCK, 0xc3);
  const blocks = size / BLOCK;
  let issued = 0;
  const worker = async (): Promise<void> => {
    while (issued < writes) {
      issued++;
      await dev.write(Math.floor(rand() * blocks) * BLOCK, buf, { fua: false });
    }
  };
  await Promise.all(Array.from({ length: QD }, worker));
}

const session = new Session();
session.connect();

/** One measured phase of one tree; the store is made fresh each time. */
async function once(t: number, phase: 'first' | 'over', root: string, backing: string, round: number): Promise<Sample> {
  const dir = join(root, `t${t}-${phase}-${round}`);
  const store = await opens[t]!(dir);
  store.autoCompact = false;
  await store.createVolume({ name: 'v', backing });
  const dev = store.head('v');
  if (phase === 'over') {
    const fill = Buffer.alloc(MiB, 0x5a);
    for (let off = 0; off < size; off += MiB) await dev.write(off, fill, { fua: false });
    await store.flush();
  }
  const profiling = v.prof !== undefined && round === 0;
  const alloc = v.alloc === true && round === 0;
  if (profiling) {
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
  }
  if (alloc) {
    await session.post('HeapProfiler.enable');
    await session.post('HeapProfiler.startSampling', {
      samplingInterval: ALLOC_SAMPLE_BYTES, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true,
    });
  }
  fsCalls.clear();
  const resources = new Map<string, number>();
  const hook = v.count && round === 0 ? createHook({ init: (_id, type) => void resources.set(type, (resources.get(type) ?? 0) + 1) }) : null;
  hook?.enable();
  const g0 = gcMs;
  const n0 = gcCount;
  const m0 = gcMajor;
  const c0 = process.cpuUsage();
  await writeRandom(dev, 7 + round);
  if (v.flush) await store.flush();
  const c = process.cpuUsage(c0);
  hook?.disable();
  // The PerformanceObserver reports GCs asynchronously: let it catch up.
  await new Promise((r) => setImmediate(r));
  const sample = { cpuUs: (c.user + c.system) / writes, gcUs: ((gcMs - g0) * 1000) / writes, gcs: gcCount - n0, majors: gcMajor - m0 };
  if (v.count && round === 0) {
    console.log(`calls ${basename(trees[t]!)} ${phase}: ${[...fsCalls].map(([k, n]) => `${k} ${round2(n / writes)}`).join(', ')} per write; async resources ${[...resources].map(([k, n]) => `${k} ${round2(n / writes)}`).join(', ')} per write`);
  }
  if (profiling) {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(join(v.prof!, `randwrite-${phase}-${t}-${basename(trees[t]!)}.cpuprofile`), JSON.stringify(profile));
  }
  if (alloc) {
    const { profile } = await session.post('HeapProfiler.stopSampling');
    printAlloc(t, phase, profile);
  }
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return sample;
}

function round2(x: number): number {
  return round(x, 3);
}

interface HeapNode { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: HeapNode[] }

function printAlloc(t: number, phase: string, profile: { head: HeapNode }): void {
  const bytes = new Map<string, number>();
  const walk = (n: HeapNode): void => {
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^file:\/\//, '').replace(trees[t]! + '/', '')}:${f.lineNumber + 1}`;
    if (n.selfSize > 0) bytes.set(key, (bytes.get(key) ?? 0) + n.selfSize);
    for (const c of n.children) walk(c);
  };
  walk(profile.head);
  const total = [...bytes.values()].reduce((a, b) => a + b, 0);
  console.log(`alloc ${basename(trees[t]!)} ${phase}: ~${round(total / writes, 0)} bytes allocated per write (sampled)`);
  for (const [k, b] of [...bytes].sort((a, b) => b[1] - a[1]).slice(0, ALLOC_TOP)) console.log(`  ${String(round(b / writes, 1)).padStart(8)} B/write  ${k}`);
}

const root = await mkdtemp(join(v.dir ?? tmpdir(), 'snapnbd-randwrite-'));
try {
  // The image the volumes read through (the harness's bench.raw): non-zero, so reads copy data.
  const backing = join(root, 'backing.raw');
  const fh = await open(backing, 'w');
  const chunk = Buffer.alloc(MiB, 0x3c);
  for (let off = 0; off < size; off += MiB) await fh.write(chunk, 0, MiB, off);
  await fh.close();
  console.log(`${size / MiB} MiB volume over a backing file, ${writes} random 4 KiB writes at QD ${QD} per run, ${rounds} rounds, trees alternated, I/O ${v.io ?? 'auto'}${v.flush ? ', then a flush' : ''}`);
  for (const phase of phases) {
    const samples: Sample[][] = trees.map(() => []);
    for (let r = 0; r < rounds; r++) {
      // Alternate the order each round: whatever runs second does not always meet a warmer cache.
      const order = trees.map((_, i) => i);
      if (r % 2 === 1) order.reverse();
      for (const t of order) samples[t]!.push(await once(t, phase, root, backing, r));
    }
    for (let t = 0; t < trees.length; t++) {
      const s = samples[t]!;
      const cpu = median(s.map((x) => x.cpuUs));
      const ratio = t === 0 ? '' : `  (${round(cpu / median(samples[0]!.map((x) => x.cpuUs)), 3)}x of ${basename(trees[0]!)})`;
      console.log(`${phase.padEnd(5)} ${basename(trees[t]!).padEnd(12)} CPU ${round(cpu, 2)} us/write (runs ${s.map((x) => round(x.cpuUs, 1)).join(', ')}), ` +
        `GC ${round(median(s.map((x) => x.gcUs)), 2)} us/write, ${median(s.map((x) => x.gcs))} GCs/run (${median(s.map((x) => x.majors))} not minor)${ratio}`);
    }
  }
} finally {
  session.disconnect();
  await rm(root, { recursive: true, force: true });
}
