// Control-plane numbers against the real server (bin/snapnbd serve, its own process):
//   1. snapshot.list with many snapshots (default 500): round-trip time of the call, and of the
//      `snapnbd snapshot list` CLI (process start included);
//   2. snapshot stall under load: two NBD connections at queue depth 32 write 4 KiB blocks
//      (our own client, every write timed) while a snapshot is taken every SNAP_EVERY_MS; the
//      stall is how much longer writes in flight across a snapshot.create take than the rest.
//   3. the same load from fio (--ioengine=nbd, 2 jobs, iodepth 32): write clat p99/max with and
//      without snapshots being taken.
// Run: node --import tsx bench/micro/control-snapshots.ts [--snapshots 500] [--seconds 5]
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ControlClient } from '../../src/control/client.ts';
import { NbdTestClient } from '../../test/helpers/control-nbd.ts';
import { SNAPNBD_BIN, startServer, tempDir } from '../../test/helpers/server.ts';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const QUEUE_DEPTH = 32;
const CONNECTIONS = 2;
const SNAP_EVERY_MS = 1000;
const LIST_ROUNDS = 20;

const { values } = parseArgs({ options: { snapshots: { type: 'string' }, seconds: { type: 'string' } } });
const SNAPSHOTS = Number(values.snapshots ?? 500);
const SECONDS = Number(values.seconds ?? 5);

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
const f = (ms: number): string => `${ms.toFixed(2)} ms`;

function run(cmd: string, args: string[]): Promise<{ ms: number; stdout: string }> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 64 * MiB }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} failed: ${stderr}`));
      else resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, stdout });
    });
  });
}

async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function listBench(ctl: ControlClient, controlPath: string): Promise<void> {
  await ctl.call('volume.create', { name: 'many', size: 256 * MiB });
  const creates: number[] = [];
  for (let i = 0; i < SNAPSHOTS; i++) creates.push(await timed(() => ctl.call('snapshot.create', { volume: 'many', name: `s${i}` })));
  creates.sort((a, b) => a - b);
  const lists: number[] = [];
  for (let i = 0; i < LIST_ROUNDS; i++) lists.push(await timed(() => ctl.call('snapshot.list', { volume: 'many' })));
  lists.sort((a, b) => a - b);
  const cli = await run(process.execPath, [SNAPNBD_BIN, 'snapshot', 'list', 'many', '--control', controlPath]);
  const cliJson = await run(process.execPath, [SNAPNBD_BIN, 'snapshot', 'list', 'many', '--json', '--control', controlPath]);
  const count = (JSON.parse(cliJson.stdout) as { snapshots: unknown[] }).snapshots.length;
  console.log(`snapshot.create x${SNAPSHOTS} (idle volume): median ${f(pct(creates, 50))}, p99 ${f(pct(creates, 99))}, max ${f(creates[creates.length - 1]!)}`);
  console.log(`snapshot.list with ${count} snapshots: median ${f(pct(lists, 50))}, max ${f(lists[lists.length - 1]!)} (${LIST_ROUNDS} calls)`);
  console.log(`CLI 'snapshot list' with ${count} snapshots: ${f(cli.ms)} wall (table), ${f(cliJson.ms)} (--json), process start included`);
}

async function stallBench(port: number, ctl: ControlClient): Promise<void> {
  const size = 256 * MiB;
  await ctl.call('volume.create', { name: 'load', size });
  const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => NbdTestClient.connect(port, 'load')));
  const lat: { issued: bigint; answered: bigint }[] = [];
  const snaps: { start: bigint; end: bigint }[] = [];
  let stop = false;
  const blocks = size / BLOCK;
  const data = Buffer.alloc(BLOCK, 0x5a);
  const worker = async (c: NbdTestClient): Promise<void> => {
    while (!stop) {
      const issued = process.hrtime.bigint();
      await c.write(Math.floor(Math.random() * blocks) * BLOCK, data);
      lat.push({ issued, answered: process.hrtime.bigint() });
    }
  };
  const running = clients.flatMap((c) => Array.from({ length: QUEUE_DEPTH }, () => worker(c)));
  const t0 = Date.now();
  let n = 0;
  while (Date.now() - t0 < SECONDS * 1000) {
    await new Promise((r) => setTimeout(r, SNAP_EVERY_MS));
    const start = process.hrtime.bigint();
    await ctl.call('snapshot.create', { volume: 'load', name: `t${n++}` });
    snaps.push({ start, end: process.hrtime.bigint() });
  }
  stop = true;
  await Promise.all(running);
  await Promise.all(clients.map((c) => c.disconnect()));
  const across = (l: { issued: bigint; answered: bigint }): boolean => snaps.some((s) => l.issued < s.end && l.answered > s.start);
  const ms = (l: { issued: bigint; answered: bigint }): number => Number(l.answered - l.issued) / 1e6;
  const spanning = lat.filter(across).map(ms).sort((a, b) => a - b);
  const quiet = lat.filter((l) => !across(l)).map(ms).sort((a, b) => a - b);
  const snapMs = snaps.map((s) => Number(s.end - s.start) / 1e6).sort((a, b) => a - b);
  const iops = lat.length / SECONDS;
  console.log(`load: ${CONNECTIONS} connections x QD${QUEUE_DEPTH} 4 KiB random writes, ${iops.toFixed(0)} writes/s, ${snaps.length} snapshots`);
  console.log(`snapshot.create under load: median ${f(pct(snapMs, 50))}, max ${f(snapMs[snapMs.length - 1]!)}`);
  console.log(`write latency away from snapshots: p50 ${f(pct(quiet, 50))}, p99 ${f(pct(quiet, 99))}, max ${f(quiet[quiet.length - 1]!)}`);
  console.log(`write latency across a snapshot.create: p50 ${f(pct(spanning, 50))}, p99 ${f(pct(spanning, 99))}, max ${f(spanning[spanning.length - 1]!)} (${spanning.length} writes)`);
}

async function fioBench(uri: string, ctl: ControlClient, dir: string, withSnapshots: boolean, tag: string): Promise<void> {
  const out = join(dir, `fio-${tag}.json`);
  const fio = run('fio', ['--name=load', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', `--iodepth=${QUEUE_DEPTH}`,
    `--numjobs=${CONNECTIONS}`, '--size=256M', '--time_based', `--runtime=${SECONDS}`, '--group_reporting',
    '--output-format=json', `--output=${out}`]);
  let n = 0;
  const snapMs: number[] = [];
  if (withSnapshots) {
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 500));
    while (Date.now() - t0 < (SECONDS - 0.5) * 1000) {
      snapMs.push(await timed(() => ctl.call('snapshot.create', { volume: 'fio', name: `${tag}${n++}` })));
      await new Promise((r) => setTimeout(r, SNAP_EVERY_MS));
    }
  }
  await fio;
  const text = readFileSync(out, 'utf8');
  const j = JSON.parse(text.slice(text.indexOf('{'))) as { jobs: { write: { iops: number; lat_ns: { max: number }; clat_ns: { percentile?: Record<string, number> } } }[] };
  const w = j.jobs[0]!.write;
  const p = (k: string): number => (w.clat_ns.percentile?.[k] ?? NaN) / 1e6;
  console.log(`fio ${withSnapshots ? `with ${n} snapshots` : 'without snapshots'}: ${w.iops.toFixed(0)} IOPS, clat p50 ${f(p('50.000000'))}, p99 ${f(p('99.000000'))}, p99.9 ${f(p('99.900000'))}, max ${f(w.lat_ns.max / 1e6)}${snapMs.length ? `; snapshot.create median ${f(pct(snapMs.sort((a, b) => a - b), 50))}` : ''}`);
}

const dataDir = tempDir('snapnbd-bench-control-');
const server = await startServer({ dataDir, args: ['--volume', 'fio=256M'] });
const ctl = await ControlClient.connect(server.controlPath);
try {
  console.log(`node ${process.version}, snapnbd at ${server.uri()}, data dir ${dataDir}`);
  await listBench(ctl, server.controlPath);
  await stallBench(server.port, ctl);
  await fioBench(server.uri('fio'), ctl, dataDir, false, 'a');
  await fioBench(server.uri('fio'), ctl, dataDir, true, 'b');
} finally {
  ctl.close();
  await server.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
