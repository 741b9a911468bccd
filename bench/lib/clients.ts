// The clients users would measure with: fio (linked with libnbd: --ioengine=nbd) and nbdcopy.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './procs.ts';

export interface Measured {
  mbps: number;
  iops: number;
  /** Longest completion latency of any request, ms (fio only). */
  latMaxMs: number | null;
  /** 99th percentile completion latency, ms (fio only). */
  latP99Ms: number | null;
  /** 99.9th percentile completion latency, ms (fio only). */
  latP999Ms?: number | null;
  seconds: number;
  /** Bytes the client moved. */
  bytes: number;
  /** CPU time (user + system, every thread) the server spent during the run, seconds; null: unknown. */
  serverCpuS?: number | null;
  /** Bytes the server had read from / written to the disk during the run (/proc/PID/io); null: unknown. */
  serverDiskReadBytes?: number | null;
  serverDiskWriteBytes?: number | null;
  /** The server's CPU split into user and system time, and its page faults, per GiB moved. */
  serverSplit?: { userMsPerGiB: number; sysMsPerGiB: number; minorFaultsPerGiB: number; majorFaultsPerGiB: number };
}

interface FioDir {
  bw_bytes: number;
  io_bytes: number;
  iops: number;
  total_ios: number;
  lat_ns: { max: number };
  clat_ns: { percentile?: Record<string, number> };
}
interface FioJson { jobs: { error: number; read: FioDir; write: FioDir; job_runtime: number }[] }

/** fio's own run-length argument for a time-based run. */
export function fioTimeBased(seconds: number): string[] {
  return ['--time_based', `--runtime=${seconds}`];
}

let fioCounter = 0;
export async function runFio(uri: string, name: string, opts: Record<string, string | number>, extra: string[], workDir: string): Promise<Measured> {
  const out = join(workDir, `fio-${++fioCounter}.json`);
  const args = [`--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, '--group_reporting',
    ...Object.entries(opts).map(([k, v]) => `--${k}=${v}`), ...extra,
    '--output-format=json', `--output=${out}`];
  const { ms } = await run('fio', args, { timeoutMs: 30 * 60_000 });
  const text = readFileSync(out, 'utf8');
  rmSync(out, { force: true });
  // fio prints libnbd chatter before the JSON when both go to one stream; skip to the object.
  const j = JSON.parse(text.slice(text.indexOf('{'))) as FioJson;
  const job = j.jobs[0];
  if (!job) throw new Error(`fio printed no job:\n${text.slice(0, 500)}`);
  if (job.error !== 0) throw new Error(`fio job error ${job.error}`);
  const bytes = job.read.bw_bytes + job.write.bw_bytes;
  const p99 = Math.max(pct(job.read), pct(job.write));
  const p999 = Math.max(pct(job.read, '99.900000'), pct(job.write, '99.900000'));
  return {
    mbps: bytes / 1e6,
    iops: job.read.iops + job.write.iops,
    latMaxMs: Math.max(job.read.lat_ns.max, job.write.lat_ns.max) / 1e6,
    latP99Ms: p99 > 0 ? p99 / 1e6 : null,
    latP999Ms: p999 > 0 ? p999 / 1e6 : null,
    seconds: ms / 1000,
    bytes: job.read.io_bytes + job.write.io_bytes,
  };
}

function pct(d: FioDir, key = '99.000000'): number {
  return d.total_ios > 0 ? d.clat_ns.percentile?.[key] ?? 0 : 0;
}

/** nbdcopy SRC DST; one of them is the NBD URI. MB/s over the whole copy including its flush. */
export async function runNbdcopy(src: string, dst: string, bytes: number): Promise<Measured> {
  const t0 = process.hrtime.bigint();
  await run('nbdcopy', [src, dst], { timeoutMs: 30 * 60_000 });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return { mbps: bytes / 1e6 / s, iops: 0, latMaxMs: null, latP99Ms: null, seconds: s, bytes };
}
