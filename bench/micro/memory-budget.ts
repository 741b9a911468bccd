// Does a smaller buffer budget cost throughput? snapnbd serves the same volume with several
// `--memory-budget` values (the server-wide cap on buffered request and reply bytes, issue 14),
// interleaved within each repetition; fio runs the 1 MiB sequential and 4 KiB random rows of
// bench/run.ts on one connection and on four (mc4). Prints the median per budget and workload.
//   node --import tsx bench/micro/memory-budget.ts [--budgets 512M,64M,16M,4M] [--reps 3] [--runtime 5]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fioTimeBased, runFio } from '../lib/clients.ts';
import { SNAPNBD_BIN, startSnapnbd, type BenchContext } from '../lib/peers.ts';
import { installExitHandlers } from '../lib/procs.ts';
import { median, round } from '../lib/stats.ts';

const VOLUME_BYTES = 1024 * 2 ** 20;
const WORKLOADS: { name: string; fio: Record<string, string | number>; primary: 'mbps' | 'iops' }[] = [
  { name: 'seqread-1m', fio: { rw: 'read', bs: '1M', iodepth: 8 }, primary: 'mbps' },
  { name: 'seqwrite-1m', fio: { rw: 'write', bs: '1M', iodepth: 8 }, primary: 'mbps' },
  { name: 'mc4-seqwrite-1m', fio: { rw: 'write', bs: '1M', iodepth: 8, numjobs: 4 }, primary: 'mbps' },
  { name: 'randread-4k', fio: { rw: 'randread', bs: '4k', iodepth: 32 }, primary: 'iops' },
];

const { values: v } = parseArgs({ options: { budgets: { type: 'string' }, reps: { type: 'string' }, runtime: { type: 'string' } } });
const budgets = (v.budgets ?? '512M,64M,16M,4M').split(',');
const reps = Number(v.reps ?? 3);
const runtime = Number(v.runtime ?? 5);

installExitHandlers();
const workDir = mkdtempSync(join(tmpdir(), 'snapnbd-budget-'));
const ctx: BenchContext = { workDir, image: join(workDir, 'bench.raw'), imageBytes: VOLUME_BYTES, snapnbdEnv: {}, snapnbdBin: SNAPNBD_BIN, compareBin: null, cpuProfDir: null, verbose: false };
const got = new Map<string, number[]>();
try {
  for (let rep = 0; rep < reps; rep++) {
    for (const w of WORKLOADS) {
      for (const b of budgets) {
        const inst = await startSnapnbd(ctx, { args: ['--volume', `bench=${VOLUME_BYTES}`, '--memory-budget', b], exportName: 'bench' });
        try {
          // Reads of a never-written volume are answered without the store: fill it first.
          if (!w.fio['rw']!.toString().includes('write')) await runFio(inst.uri, 'fill', { rw: 'write', bs: '1M', iodepth: 8 }, [], workDir);
          const m = await runFio(inst.uri, w.name, w.fio, fioTimeBased(runtime), workDir);
          const key = `${w.name} ${b}`;
          got.set(key, [...(got.get(key) ?? []), w.primary === 'mbps' ? m.mbps : m.iops]);
          process.stderr.write(`rep ${rep + 1} ${key}: ${round(w.primary === 'mbps' ? m.mbps : m.iops, 1)} ${w.primary === 'mbps' ? 'MB/s' : 'IOPS'}\n`);
        } finally {
          await inst.stop();
        }
      }
    }
  }
  process.stdout.write(`| workload | ${budgets.map((b) => `--memory-budget ${b}`).join(' | ')} |\n|---|${budgets.map(() => '---:').join('|')}|\n`);
  for (const w of WORKLOADS) {
    process.stdout.write(`| ${w.name} (${w.primary === 'mbps' ? 'MB/s' : 'IOPS'}) | ${budgets.map((b) => round(median(got.get(`${w.name} ${b}`) ?? []), 0)).join(' | ')} |\n`);
  }
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
