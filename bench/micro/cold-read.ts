// Cold random reads, in process (no NBD, no fio): 4 KiB reads at queue depth 32 spread over a
// file (1 GiB by default) through the engine's file layer (src/storage/file-io.ts), right after
// the page cache was dropped (root). Reports reads per second, CPU time per read, the bytes the
// disk served and how many reads ran synchronously (page cache hits) against in the pool.
// `--hot` reads the file through first instead (the page cache holds it). `--base DIR` runs another checkout's file-io.ts the same way, alternating, to compare builds.
// Run: node --import tsx bench/micro/cold-read.ts [--file PATH] [--mib 1024] [--reads 100000] [--reps 3] [--hot] [--base DIR]
import { execSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

const QD = 32;
const BLOCK = 4096;
const MiB = 1024 * 1024;

interface FileIoModule {
  realFileIo: { open(path: string, mode: 'r'): Promise<{ read(b: Buffer, o: number, l: number, p: number): Promise<number>; close(): Promise<void> }> };
}

function diskReadBytes(): number {
  const m = /read_bytes: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'));
  return Number(m?.[1] ?? 0);
}

function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

async function once(mod: FileIoModule, file: string, size: number, reads: number, hot: boolean): Promise<string> {
  const f = await mod.realFileIo.open(file, 'r');
  if (hot) readFileSync(file);
  else execSync('sync; echo 3 > /proc/sys/vm/drop_caches');
  const rand = rng(11);
  const blocks = size / BLOCK;
  let issued = 0;
  let fastest = 0;
  const d0 = diskReadBytes();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const lane = async (): Promise<void> => {
    const b = Buffer.alloc(BLOCK);
    while (issued < reads) {
      issued++;
      const t = performance.now();
      await f.read(b, 0, BLOCK, Math.floor(rand() * blocks) * BLOCK);
      if (performance.now() - t < 0.02) fastest++;
    }
  };
  await Promise.all(Array.from({ length: QD }, lane));
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  const disk = diskReadBytes() - d0;
  await f.close();
  return `${Math.round((reads / ms) * 1000)} reads/s, CPU ${((c.user + c.system) / reads).toFixed(1)} µs/read, disk ${(disk / MiB).toFixed(0)} MiB, answered under 20 µs ${((fastest / reads) * 100).toFixed(0)} %`;
}

const { values } = parseArgs({
  options: {
    file: { type: 'string' }, mib: { type: 'string', default: '1024' }, reads: { type: 'string', default: '100000' },
    reps: { type: 'string', default: '3' }, base: { type: 'string' }, hot: { type: 'boolean', default: false },
  },
});
const size = Number(values.mib) * MiB;
const file = values.file ?? `/tmp/cold-read-${values.mib}.img`;
if (!existsSync(file)) {
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < Number(values.mib); i++) writeFileSync(file, chunk.fill(i & 0xff), { flag: i === 0 ? 'w' : 'a' });
}
// Each build in its own child, so each has its own (process-wide) read strategy.
if (process.env['COLD_READ_CHILD']) {
  const mod = (await import(resolve(process.env['COLD_READ_CHILD'], 'src/storage/file-io.ts'))) as FileIoModule;
  process.stdout.write(await once(mod, file, size, Number(values.reads), values.hot));
} else {
  const builds = [['this', resolve(import.meta.dirname, '../..')], ...(values.base ? [['base', resolve(values.base)]] : [])];
  for (let rep = 0; rep < Number(values.reps); rep++) {
    for (const [name, dir] of rep % 2 ? [...builds].reverse() : builds) {
      const out = execSync(`node --import tsx ${JSON.stringify(import.meta.filename)} --file ${file} --mib ${values.mib} --reads ${values.reads}${values.hot ? ' --hot' : ''}`, {
        env: { ...process.env, COLD_READ_CHILD: dir }, cwd: resolve(import.meta.dirname, '../..'),
      });
      console.log(`${name} rep ${rep + 1}: ${out.toString()}`);
    }
  }
}
