// The two kinds of 4 KiB write after a snapshot, apart, in process (no NBD, no fio): CPU per write
// of (first) the first write to each chunk of a fully written volume after one snapshot (a fresh
// partial slot: allocation, SlotValid and MapRun records, space counters), in random chunk order,
// then (more) random writes, most of them into slots already partial. Each tree's dist/ is loaded
// side by side (`npm run build` first) and the trees alternate round by round, so load from other
// processes falls on each alike; the median per tree is printed. `--io null` drops the segment
// writes (the JavaScript alone; the figure to trust on a loaded machine), `--io sync` makes them
// synchronous. No commit runs during a phase (the interval is long), as in a 5 s bench row.
//   node --import tsx bench/micro/snap-first-writes.ts [--trees DIR,DIR] [--mib 1024] [--rounds 3] [--io null|sync]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, basename } from 'node:path';
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

const { values: v } = parseArgs({ options: { trees: { type: 'string' }, mib: { type: 'string' }, rounds: { type: 'string' }, io: { type: 'string' } } });
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
  const f = (await import(join(tree, 'dist/storage/file-io.js'))) as { realFileIo: FileIoLike; writeStrategy: { next(): boolean; record(): void } };
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

async function phase(dev: Dev, offsets: number[]): Promise<number> {
  const buf = Buffer.alloc(BLOCK, 0xc3);
  let i = 0;
  const c0 = process.cpuUsage();
  await Promise.all(Array.from({ length: QD }, async () => {
    while (i < offsets.length) await dev.write(offsets[i++]!, buf, { fua: false });
  }));
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / offsets.length;
}

async function once(t: number, root: string, r: number): Promise<{ first: number; more: number }> {
  const dir = join(root, `t${t}-${r}`);
  const { open, fileIo } = loaded[t]!;
  const store = await open(dir, { commitIntervalMs: COMMIT_INTERVAL_MS, fileIo });
  store.autoCompact = false;
  await store.createVolume({ name: 'v', size });
  const dev = store.head('v');
  const fill = Buffer.alloc(MiB, 0x5a);
  for (let o = 0; o < size; o += MiB) await dev.write(o, fill, { fua: false });
  await store.flush();
  await store.createSnapshot('v', 's0');
  const rand = rng(99 + r);
  const chunks = size / CHUNK;
  const order = Array.from({ length: chunks }, (_, i) => i);
  for (let i = chunks - 1; i > 0; i--) {
    const j = rand() % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const first = await phase(dev, order.map((c) => c * CHUNK + (rand() % (CHUNK / BLOCK)) * BLOCK));
  const more = await phase(dev, Array.from({ length: chunks * MORE_PER_CHUNK }, () => (rand() % (size / BLOCK)) * BLOCK));
  await store.flush();
  await store.close();
  await rm(dir, { recursive: true, force: true });
  return { first, more };
}

const root = await mkdtemp(join(tmpdir(), 'snapnbd-snapfirst-'));
try {
  const got = trees.map(() => ({ first: [] as number[], more: [] as number[] }));
  for (let r = 0; r < rounds; r++) {
    for (let t = 0; t < trees.length; t++) {
      const s = await once(t, root, r);
      got[t]!.first.push(s.first);
      got[t]!.more.push(s.more);
    }
  }
  console.log(`${size / MiB} MiB volume, 1 snapshot, ${size / CHUNK} first writes then ${MORE_PER_CHUNK * size / CHUNK} more, QD ${QD}, ${rounds} rounds, segment writes ${io}`);
  for (let t = 0; t < trees.length; t++) {
    const g = got[t]!;
    console.log(`${basename(trees[t]!).padEnd(16)} first ${round(median(g.first), 2)} us/write (${g.first.map((x) => round(x, 1)).join(', ')}), ` +
      `more ${round(median(g.more), 2)} us/write (${g.more.map((x) => round(x, 1)).join(', ')})`);
  }
} finally {
  await rm(root, { recursive: true, force: true });
}
