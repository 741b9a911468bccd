// Fixed-work, interleaved comparison of whole snapnbd servers on the harness's randwrite-4k
// (fio --ioengine=nbd, 4 KiB random writes at QD 32 over a fresh volume whose backing is a 1 GiB
// image), for a shared machine where throughput is noise: every build serves the same number of
// writes at the same offsets (fio --number_ios, fixed seed), builds alternate rep by rep, and what
// is compared is the server's CPU per write (/proc/PID/stat, all threads, counted from the first
// write to the last), plus, with --count, how many writes ran synchronously and how many went to
// the thread pool (bench/lib/fs-count.mjs). --cpu-prof DIR keeps one V8 profile per server;
// --perf DIR one `perf record -g` of each server while fio runs (kernel time by function);
// --strace prints `strace -c -f` of each server (which slows every synchronous write: pool shares under it mean nothing).
// Usage: node --import tsx bench/micro/server-randwrite.ts --bins bin/snapnbd,OLD/bin/snapnbd
//          [--writes 250000] [--reps 4] [--count] [--cpu-prof DIR] [--strace] [--perf DIR]
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createImage } from '../lib/image.js';
import { processCpuSeconds, writeBack } from '../lib/machine.js';
import { exportNameOf } from '../lib/peers.js';
import { installExitHandlers, run, spawnTracked, waitLine } from '../lib/procs.js';
import { median } from '../lib/stats.js';

const IMAGE_BYTES = 2 ** 30;
const FS_COUNT = resolve(import.meta.dirname, '..', 'lib', 'fs-count.mjs');

interface Rep { bin: string; cpuUs: number; perWriteUs: number; pool: number; sync: number; stalls: number; strace: string | null }

async function oneRep(bin: string, image: string, work: string, writes: number, opts: { count: boolean; cpuProf: string | null; strace: boolean; perf: string | null }): Promise<Rep> {
  const dir = mkdtempSync(join(work, 'rep-'));
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (opts.count) { env.NODE_OPTIONS = `--import=${FS_COUNT}`; env.SNAPNBD_FS_COUNT = dir; }
  const node = [...(opts.cpuProf ? ['--cpu-prof', '--cpu-prof-dir', resolve(opts.cpuProf)] : []), bin, 'serve', '--data-dir', join(dir, 'data'),
    '--listen', '127.0.0.1:0', '--log-level', 'warn', image];
  const straceOut = join(dir, 'strace.txt');
  const p = opts.strace
    ? spawnTracked('strace', ['-c', '-f', '-o', straceOut, process.execPath, ...node], { env })
    : spawnTracked(process.execPath, node, { env });
  let pid = p.pid;
  try {
    await waitLine(p, (l) => l === 'ready');
    if (opts.strace) pid = Number(readFileSync(`/proc/${p.pid}/task/${p.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
    const port = /^listening nbd 127\.0\.0\.1:(\d+)$/m.exec(p.stdout())![1];
    writeBack();
    const perf = opts.perf ? spawnTracked('perf', ['record', '-q', '-g', '-o', join(resolve(opts.perf), `perf-${pid}.data`), '-p', String(pid)]) : null;
    const before = processCpuSeconds(pid)!;
    await run('fio', ['--name=w', '--ioengine=nbd', `--uri=nbd://127.0.0.1:${port}/${exportNameOf(image)}`,
      '--rw=randwrite', '--bs=4k', '--iodepth=32', `--number_ios=${writes}`, '--randseed=1', '--size=1g', '--output-format=terse'],
    { timeoutMs: 30 * 60_000 });
    const cpuUs = (processCpuSeconds(pid)! - before) * 1e6;
    if (perf) { perf.proc.kill('SIGINT'); await perf.exited; }
    // Under strace: stop the server itself, so strace sees it exit and writes its summary.
    if (pid !== p.pid) { process.kill(pid, 'SIGTERM'); await p.exited; } else await p.stop();
    let pool = 0, sync = 0, stalls = 0;
    if (opts.count) {
      for (const f of readdirSync(dir).filter((n) => n.startsWith('fs-count-'))) {
        const j = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { calls: Record<string, [number, number]>; stalls?: Record<string, number> };
        const c = j.calls;
        stalls += (j.stalls?.writeSync ?? 0) + (j.stalls?.writevSync ?? 0);
        pool += (c.write?.[0] ?? 0) + (c.writev?.[0] ?? 0);
        sync += (c.writeSync?.[0] ?? 0) + (c.writevSync?.[0] ?? 0);
      }
    }
    const strace = opts.strace ? readFileSync(straceOut, 'utf8') : null;
    return { bin, cpuUs, perWriteUs: cpuUs / writes, pool, sync, stalls, strace };
  } finally {
    await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  installExitHandlers();
  const { values } = parseArgs({ options: {
    bins: { type: 'string' }, writes: { type: 'string', default: '250000' }, reps: { type: 'string', default: '4' },
    count: { type: 'boolean', default: false }, 'cpu-prof': { type: 'string' }, strace: { type: 'boolean', default: false }, perf: { type: 'string' },
  } });
  const bins = (values.bins ?? 'bin/snapnbd').split(',').map((b) => resolve(b));
  const writes = Number(values.writes);
  const work = mkdtempSync(join(tmpdir(), 'server-randwrite-'));
  try {
    const image = join(work, 'bench.raw');
    createImage(image, IMAGE_BYTES);
    const reps = new Map<string, Rep[]>(bins.map((b) => [b, []]));
    for (let r = 0; r < Number(values.reps); r++) {
      // Alternate which build goes first, so neither always follows the other.
      const order = r % 2 === 0 ? bins : [...bins].reverse();
      for (const bin of order) {
        const rep = await oneRep(bin, image, work, writes, { count: values.count!, cpuProf: values['cpu-prof'] ?? null, strace: values.strace!, perf: values.perf ?? null });
        reps.get(bin)!.push(rep);
        const share = rep.pool + rep.sync > 0 ? ` writes: ${rep.sync} sync, ${rep.pool} pool (${(100 * rep.pool / (rep.pool + rep.sync)).toFixed(1)} %), ${rep.stalls} synchronous over 10 ms` : '';
        process.stdout.write(`rep ${r + 1} ${bin}: ${rep.perWriteUs.toFixed(2)} µs CPU/write${share}\n`);
        if (rep.strace) process.stdout.write(`${rep.strace}\n`);
      }
    }
    for (const [bin, rs] of reps) {
      process.stdout.write(`${bin}: median ${median(rs.map((x) => x.perWriteUs)).toFixed(2)} µs CPU/write (${rs.map((x) => x.perWriteUs.toFixed(1)).join(', ')})\n`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
