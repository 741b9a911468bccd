// First writes after a snapshot, in process (no NBD, no fio): CPU time and wall time per 4 KiB
// random write at queue depth 32 on a fully written volume, with 0, 1 and 100 snapshots, page
// cache hot and (as root) cold. CPU time per write is the figure that survives a busy machine.
// Run: node --import tsx bench/micro/storage-cow-write.ts [volume MiB, default 256] [writes, default volume/4 KiB] [cold:1 ...]
//   [io:auto|sync|pool|null]: segment writes as the server decides (auto), all synchronous, all
//   in libuv's pool, or dropped (null: the JavaScript cost alone); the line says how many went to the pool.
import { execSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCowStore } from '../../src/storage/index.ts';
import { realFileIo, type FileIo, type IoFile } from '../../src/storage/file-io.ts';
import { writeStrategy } from '../../src/storage/sync-io.ts';

const MiB = 1024 * 1024;
const QD = 32;
const BLOCK = 4096;

/** This process's I/O counters: bytes through read/write syscalls, and bytes the disk served. */
function ioCounters(): { rchar: number; wchar: number; disk: number } {
  const f = Object.fromEntries(readFileSync('/proc/self/io', 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
  return { rchar: f['rchar'] ?? 0, wchar: f['wchar'] ?? 0, disk: f['read_bytes'] ?? 0 };
}

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

type IoMode = 'auto' | 'sync' | 'pool' | 'null';
/** Segment-file writes of the measured phase: how many went to the pool (io:auto counts them by wrapping). */
const segWrites = { all: 0, pool: 0 };

/** The real file system, with segment writes dropped (io:null) and counted; sync/pool forced by the strategy. */
function fileIoFor(io: IoMode): FileIo {
  return {
    ...realFileIo,
    async open(path, mode) {
      const f = await realFileIo.open(path, mode);
      if (!/\/seg-[^/]*$/.test(path)) return f;
      const count = (): void => {
        segWrites.all++;
        // The strategy's state before this write decides where it runs (sync-io.ts, asked by file-io.ts RealFile.write).
        if (!writeStrategy.sync) segWrites.pool++;
      };
      const w: IoFile = {
        read: (b, o, l, p) => f.read(b, o, l, p),
        write: (b, o, l, p) => { count(); return io === 'null' ? Promise.resolve() : f.write(b, o, l, p); },
        writev: (pc, p) => { count(); return io === 'null' ? Promise.resolve() : f.writev(pc, p); },
        datasync: () => f.datasync(), truncate: (l) => f.truncate(l), size: () => f.size(), close: () => f.close(),
      };
      return w;
    },
  };
}

async function run(dir: string, size: number, writes: number, snapshots: number, cold: boolean, io: IoMode): Promise<{ cpuUs: number; sysUs: number; journalB: number; wallUs: number; readB: number; writeB: number; diskB: number; poolShare: number }> {
  const s = await openCowStore(dir, { commitIntervalMs: 1000, fileIo: fileIoFor(io) });
  s.autoCompact = false;
  await s.createVolume({ name: 'v', size });
  const dev = s.head('v');
  const fill = Buffer.alloc(MiB, 0x5a);
  for (let off = 0; off < size; off += MiB) await dev.write(off, fill, { fua: false });
  await s.flush();
  for (let i = 0; i < snapshots; i++) await s.createSnapshot('v', `s${i}`);
  if (cold) execSync('sync; echo 3 > /proc/sys/vm/drop_caches');
  const rand = rng(7);
  const buf = Buffer.alloc(BLOCK, 0xc3);
  const blocks = size / BLOCK;
  let issued = 0;
  const j0 = s.inspect().journalEnd;
  segWrites.all = 0;
  segWrites.pool = 0;
  const io0 = ioCounters();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    while (issued < writes) {
      issued++;
      await dev.write(Math.floor(rand() * blocks) * BLOCK, buf, { fua: false });
    }
  };
  await Promise.all(Array.from({ length: QD }, worker));
  await s.flush();
  const wallUs = Number(process.hrtime.bigint() - t0) / 1e3;
  const c = process.cpuUsage(c0);
  const ioc = ioCounters();
  const journalB = (s.inspect().journalEnd - j0) / writes;
  await s.close();
  return {
    cpuUs: (c.user + c.system) / writes, sysUs: c.system / writes, journalB, wallUs: wallUs / writes,
    readB: (ioc.rchar - io0.rchar) / writes, writeB: (ioc.wchar - io0.wchar) / writes, diskB: (ioc.disk - io0.disk) / writes,
    poolShare: io === 'auto' ? segWrites.pool / Math.max(1, segWrites.all) : io === 'pool' ? 1 : 0,
  };
}

async function main(): Promise<void> {
  const size = Number(process.argv[2] ?? 256) * MiB;
  const writes = Number(process.argv[3] ?? size / BLOCK);
  const root = await mkdtemp(join(tmpdir(), 'snapnbd-cow-'));
  // A fourth argument such as cold:1 runs that one case (for perf or --cpu-prof).
  const only = process.argv[4] && process.argv[4] !== 'all' ? process.argv[4] : null;
  const io = (process.argv[5]?.replace(/^io:/, '') ?? 'auto') as IoMode;
  if (!['auto', 'sync', 'pool', 'null'].includes(io)) throw new Error(`io:${io}: expected io:auto, io:sync, io:pool or io:null`);
  // Forced for the whole process: the strategy is shared by every file (sync-io.ts).
  if (io === 'sync') writeStrategy.next = () => true;
  if (io === 'pool') writeStrategy.next = () => false;
  const caches = process.getuid?.() === 0 ? [false, true] : [false];
  try {
    console.log(`${size / MiB} MiB volume, ${writes} random 4 KiB writes at QD ${QD}, then a flush; segment writes io:${io}`);
    for (const cold of caches) {
      const base: Partial<Record<number, { wallUs: number }>> = {};
      for (const snaps of [0, 1, 100]) {
        if (only !== null && only !== `${cold ? 'cold' : 'hot'}:${snaps}`) continue;
        const r = await run(join(root, `${cold ? 'c' : 'h'}${snaps}`), size, writes, snaps, cold, io);
        base[snaps] = r;
        const rel = !base[0] ? '' : `  (wall ${(base[0]!.wallUs / r.wallUs).toFixed(2)}x of 0 snapshots)`;
        console.log(`${cold ? 'cold' : 'hot '} ${String(snaps).padStart(3)} snapshots: per write ${r.cpuUs.toFixed(1)} us CPU (${r.sysUs.toFixed(1)} system), ${r.wallUs.toFixed(1)} us wall, ` +
          `${(r.readB / 1024).toFixed(1)} KiB read (${(r.diskB / 1024).toFixed(1)} KiB from disk), ${(r.writeB / 1024).toFixed(1)} KiB written, ${r.journalB.toFixed(1)} journal bytes, ` +
          `${(100 * r.poolShare).toFixed(0)}% of segment writes in the pool (about; io:${io})${rel}`);
        await rm(join(root, `${cold ? 'c' : 'h'}${snaps}`), { recursive: true, force: true });
      }
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
