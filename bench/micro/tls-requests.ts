// Server CPU per 4 KiB request on the TLS rows' path (issue 14), by fixed amounts of work rather
// than fixed time, so the figure holds on a loaded machine: fio -> the nbdkit bridge -> the server
// (bench/lib/tls.ts), in clear (`bridge`) or over TLS with certificates (`tls`) or a PSK (`psk`).
// Per server: a warm-up pass (random reads and writes of the same offsets, so the passes measured
// rewrite chunks already written: no first writes into fresh chunks, a storage cost, see "The
// bridged random writes" in bench/README.md), then N random reads and N random rewrites.
// `--compare PATH` runs another build's bin/snapnbd in the same rounds, interleaved (order swapped
// every other round). `--strace` counts the server's syscalls per request in one more pass.
//   node --import tsx bench/micro/tls-requests.ts [--via tls,bridge] [--ios 20000] [--reps 3]
//        [--compare OTHER/bin/snapnbd] [--strace]
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runFio } from '../lib/clients.ts';
import { createImage } from '../lib/image.ts';
import { processCpuSeconds } from '../lib/machine.ts';
import { exportNameOf, SNAPNBD_BIN, startSnapnbd, type BenchContext } from '../lib/peers.ts';
import { installExitHandlers } from '../lib/procs.ts';
import { median, round } from '../lib/stats.ts';
import { startBridge, tlsServerArgs, viaTls, type Via } from '../lib/tls.ts';

const IMAGE_BYTES = 1024 * 2 ** 20;
/** The passes touch this much of the volume (the warm-up writes it first). */
const SPAN = 64 * 2 ** 20;
const BLOCK = 4096;

const { values: v } = parseArgs({
  options: { via: { type: 'string' }, ios: { type: 'string' }, reps: { type: 'string' }, compare: { type: 'string' }, strace: { type: 'boolean' } },
});
const vias = (v.via ?? 'tls,bridge').split(',') as Via[];
for (const x of vias) if (!['bridge', 'tls', 'psk'].includes(x)) throw new Error(`--via: bridge, tls or psk, not ${x}`);
const ios = Number(v.ios ?? 20_000);
const reps = Number(v.reps ?? 3);
const builds: { name: string; bin: string }[] = [{ name: 'this', bin: SNAPNBD_BIN }];
if (v.compare) builds.push({ name: 'base', bin: resolve(v.compare) });

installExitHandlers();
const workDir = mkdtempSync(join(tmpdir(), 'snapnbd-tlsreq-'));
const image = join(workDir, 'bench.raw');

type Cell = { iops: number[]; usPerIo: number[] };
const results = new Map<string, Cell>();
function record(key: string, iops: number, us: number): void {
  const c = results.get(key) ?? { iops: [], usPerIo: [] };
  c.iops.push(iops);
  c.usPerIo.push(us);
  results.set(key, c);
}

/** strace -c -f on PID while `work` runs; the summary's per-syscall call counts. */
async function straceCounts(pid: number, work: () => Promise<unknown>): Promise<Map<string, number>> {
  const out = join(workDir, `strace-${pid}.txt`);
  const st = spawn('strace', ['-c', '-f', '-p', String(pid), '-o', out], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  await work();
  st.kill('SIGINT');
  await new Promise((r) => st.once('exit', r));
  const counts = new Map<string, number>();
  for (const line of readFileSync(out, 'utf8').split('\n')) {
    const m = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/.exec(line);
    if (m && m[2] !== 'total') counts.set(m[2]!, Number(m[1]));
  }
  return counts;
}

try {
  createImage(image, IMAGE_BYTES);
  for (let rep = 1; rep <= reps; rep++) {
    for (const via of vias) {
      for (const b of rep % 2 === 1 ? builds : [...builds].reverse()) {
        const ctx: BenchContext = { workDir, image, imageBytes: IMAGE_BYTES, snapnbdEnv: {}, snapnbdBin: b.bin, compareBin: null, cpuProfDir: null, verbose: false };
        const tlsArgs = viaTls(via) ? tlsServerArgs('snapnbd', via) : [];
        const inst = await startSnapnbd(ctx, { args: [image, ...tlsArgs], exportName: exportNameOf(image) });
        const bridge = await startBridge(inst, via, workDir);
        try {
          const fio = (rw: string, n: number, name: string): ReturnType<typeof runFio> =>
            runFio(bridge.uri, name, { rw, bs: '4k', iodepth: 32, size: SPAN, io_size: n * BLOCK, randseed: rep, norandommap: 1 }, [], workDir);
          // Warm-up: JIT, first allocations, and every chunk of the span written once.
          await runFio(bridge.uri, 'fill', { rw: 'write', bs: '64k', iodepth: 8, size: SPAN }, [], workDir);
          await fio('randread', ios / 4, 'warm');
          for (const rw of ['randread', 'randwrite']) {
            const cpu0 = processCpuSeconds(inst.pid);
            const m = await fio(rw, ios, rw);
            const cpu1 = processCpuSeconds(inst.pid);
            if (cpu0 === null || cpu1 === null) throw new Error('no server CPU figure');
            const n = m.bytes / BLOCK;
            record(`${via} ${rw} ${b.name}`, m.iops, ((cpu1 - cpu0) * 1e6) / n);
          }
          if (v.strace && rep === 1) {
            for (const rw of ['randread', 'randwrite']) {
              const c = await straceCounts(inst.pid, () => fio(rw, ios, `strace-${rw}`));
              const per = [...c].filter(([, k]) => k >= ios / 20).sort((x, y) => y[1] - x[1]).map(([s, k]) => `${s} ${round(k / ios, 2)}`);
              process.stdout.write(`strace ${via} ${rw} ${b.name}: per request: ${per.join(', ')}\n`);
            }
          }
        } finally {
          await bridge.stop();
          await inst.stop();
        }
      }
    }
  }
  process.stdout.write(`\n| path | workload | build | IOPS (median of ${reps}) | server CPU µs per request (median; each rep) |\n|---|---|---|---:|---|\n`);
  for (const [key, c] of results) {
    const [via, rw, build] = key.split(' ');
    process.stdout.write(`| ${via} | ${rw} | ${build} | ${round(median(c.iops), 0)} | ${round(median(c.usPerIo), 1)} (${c.usPerIo.map((x) => round(x, 1)).join(', ')}) |\n`);
  }
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
