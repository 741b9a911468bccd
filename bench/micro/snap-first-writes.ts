// The two kinds of 4 KiB write after a snapshot, apart, in process (no NBD, no fio): CPU per write
// of (first) the first write to each chunk of a fully written volume after one snapshot (a fresh
// partial slot: allocation, SlotValid and MapRun records, space counters), in random chunk order,
// then (more) random writes, most of them into slots already partial. Before the snapshot, (over)
// as many random writes in place over the written volume: the baseline of the snap0 rows. Each tree's dist/ is loaded
// side by side (`npm run build` first) and the trees alternate round by round, so load from other
// processes falls on each alike; the median per tree is printed. `--io null` drops the segment
// writes (the JavaScript alone; the figure to trust on a loaded machine), `--io sync` makes them
// synchronous. No commit runs during a phase (the interval is long), as in a 5 s bench row.
// `--cold` (root): the page cache is dropped before the over and the first phase, as the cold rows do.
//   node --import tsx bench/micro/snap-first-writes.ts [--trees DIR,DIR] [--mib 1024] [--rounds 3] [--io null|sync] [--cold]
import { execSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, basename } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { median, round } from '../lib/stats.ts';

const MiB = 2 ** 20;
const BLOCK = 4096;
const CHUNK = 64 * 1024;
const QD = 32;
/** Random writes of the second phase per chunk of the volume. */
const MORE_PER_CHUNK = 4;
/** Long enough that no periodic commit runs during a phase. */
const COMMIT_INTERVAL_MS = 600_000;

const { values: v } = parseArgs({ options: { trees: { type: 'string' }, mib: { type: 'string' }, rounds: { type: 'string' }, io: { type: 'string' }, cold: { type: 'boolean' } } });
const trees = (v.trees ?? join(import.meta.dirname, '..', '..')).split(',').map((t) => resolve(t));
const size = Number(v.mib ?? 1024) * MiB;
const rounds = Number(v.rounds ?? 3);
const io = v.io ?? 'null';
if (io !== 'null' && io !== 'sync') throw new Error(`--io ${io}: expected null or sync`);

interface Dev { write(offset: number, data: Buffer, opts: { fua: boolean }): Promise<void> }
interface Store {
  createVolume(spec: { name: string; size?: number }): Promise<unknown>;
  createSnapshot(vol: string, name: string): Promise<unknown>;
  head(name: string): Dev;
  flush(): Promise<void>;
  close(): Promise<void>;
  autoCompact?: boolean;
}
interface IoFileLike { write(...a: unknown[]): Promise<void>; writev(...a: unknown[]): Promise<void> }
interface FileIoLike { open(path: string, mode: string): Promise<IoFileLike> }
type Open = (dir: string, opts: object) => Promise<Store>;

const loaded: { open: Open; fileIo: FileIoLike }[] = [];
for (const tree of trees) {
  const m = (await import(join(tree, 'dist/storage/index.js'))) as { openCowStore: Open };
  // The write strategy lives in sync-io.js since the split; older builds kept it in file-io.js.
  const syncIo = join(tree, 'dist/storage/sync-io.js');
  const f = {
    ...(await import(join(tree, 'dist/storage/file-io.js'))),
    ...(existsSync(syncIo) ? await import(syncIo) : {}),
  } as { realFileIo: FileIoLike; writeStrategy: { next(): boolean; record(): void } };
  // Every segment write synchronous (null: dropped before the syscall).
  f.writeStrategy.next = () => true;
  f.writeStrategy.record = () => undefined;
  const real = f.realFileIo;
  const fileIo: FileIoLike = io === 'sync' ? real : {
    ...real,
    async open(path, mode) {
      const file = await real.open(path, mode);
      if (!/\/seg-[^/]*$/.test(path)) return file;
      return Object.assign(Object.create(file) as IoFileLike, { write: () => Promise.resolve(), writev: () => Promise.resolve() });
    },
  };
  loaded.push({ open: m.openCowStore, fileIo });
}

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0);
}

/** Garbage-collector time so far (ms), for each phase's share. */
let gcMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });
/** CPU and garbage-collector time per write (µs) of one phase. */
interface Cost { cpu: number; gc: number }

async function phase(dev: Dev, offsets: number[]): Promise<Cost> {
  const buf = Buffer.alloc(BLOCK, 0xc3);
  let i = 0;
  const g0 = gcMs;
  const c0 = process.cpuUsage();
  await Promise.all(Array.from({ length: QD }, async () => {
    while (i < offsets.length) await dev.write(offsets[i++]!, buf, { fua: false });
  }));
  const c = process.cpuUsage(c0);
  // Observer entries arrive a turn later.
  await new Promise((r) => setImmediate(r));
  return { cpu: (c.user + c.system) / offsets.length, gc: ((gcMs - g0) * 1000) / offsets.length };
}

function dropCaches(): void {
  if (v.cold) execSync('sync; echo 3 > /proc/sys/vm/drop_caches');
}

async function once(t: number, root: string, r: number): Promise<{ over: Cost; first: Cost; more: Cost }> {
  const dir = join(root, `t${t}-${r}`);
  const { open, fileIo } = loaded[t]!;
  const store = await open(dir, { commitIntervalMs: COMMIT_INTERVAL_MS, fileIo });
  store.autoCompact = false;
  await store.createVolume({ name: 'v', size });
  const dev = store.head('v');
  const fill = Buffer.alloc(MiB, 0x5a);
  for (let o = 0; o < size; o += MiB) await dev.write(o, fill, { fua: false });
  await store.flush();
  const rand = rng(99 + r);
  const chunks = size / CHUNK;
  const randomBlocks = (): number[] => Array.from({ length: chunks * MORE_PER_CHUNK }, () => (rand() % (size / BLOCK)) * BLOCK);
  dropCaches();
  const over = await phase(dev, randomBlocks());
  await store.flush();
  await store.createSnapshot('v', 's0');
  dropCaches();
  const order = Array.from({ length: chunks }, (_, i) => i);
  for (let i = chunks - 1; i > 0; i--) {
    const j = rand() % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const first = await phase(dev, order.map((c) => c * CHUNK + (rand() % (CHUNK / BLOCK)) * BLOCK));
  const more = await phase(dev, randomBlocks());
  await store.flush();
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return { over, first, more };
}

const root = await mkdtemp(join(tmpdir(), 'snapnbd-snapfirst-'));
try {
  const got = trees.map(() => ({ over: [] as Cost[], first: [] as Cost[], more: [] as Cost[] }));
  for (let r = 0; r < rounds; r++) {
    for (let t = 0; t < trees.length; t++) {
      const s = await once(t, root, r);
      got[t]!.over.push(s.over);
      got[t]!.first.push(s.first);
      got[t]!.more.push(s.more);
    }
  }
  console.log(`${size / MiB} MiB volume, ${MORE_PER_CHUNK * size / CHUNK} writes in place, 1 snapshot, ${size / CHUNK} first writes then ${MORE_PER_CHUNK * size / CHUNK} more, ` +
    `QD ${QD}, ${rounds} rounds, segment writes ${io}${v.cold ? ', page cache dropped before each part' : ''}`);
  for (let t = 0; t < trees.length; t++) {
    const g = got[t]!;
    const us = (xs: Cost[]): string => `${round(median(xs.map((x) => x.cpu)), 2)} us/write (${xs.map((x) => round(x.cpu, 1)).join(', ')}; GC ${xs.map((x) => round(x.gc, 1)).join(', ')})`;
    console.log(`${basename(trees[t]!).padEnd(16)} over ${us(g.over)}, first ${us(g.first)}, more ${us(g.more)}`);
  }
} finally {
  await rm(root, { recursive: true, force: true });
}
