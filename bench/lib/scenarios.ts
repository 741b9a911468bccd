// snapnbd-only measurements of snapshot costs: create/delete latency on small and huge sparse
// volumes with and without data written, the longest write stall while snapshots are taken every
// second, the space a delete returns, and the peak RSS of a big volume with many snapshots.
import { join } from 'node:path';
import type { ModeSettings, ScenarioName } from './config.ts';
import { runFio, fioTimeBased, type Measured } from './clients.ts';
import { ControlClient } from './control.ts';
import { allocatedBytes } from './image.ts';
import { memoryOf } from './machine.ts';
import { REPO_ROOT, startSnapnbd, type BenchContext, type PeerInstance } from './peers.ts';
import { run } from './procs.ts';
import { median, percentile, round } from './stats.ts';
import { hrtimeUs, loopWatchSummary, type CallWindow } from './loop-watch-report.ts';
import { kernelStacksSummary } from './kernel-stacks-report.ts';

const GiB = 2 ** 30;
const TiB = 2 ** 40;
/** Interval between snapshots in the write-stall run (the issue: every second). */
const STALL_SNAPSHOT_INTERVAL_MS = 1000;
/** The write-stall run's bystander: an unwritten volume read at a light, steady rate. */
const STALL_BYSTANDER_BYTES = 64 * 2 ** 20;
const STALL_BYSTANDER_JOB = { rw: 'randread', bs: '4k', iodepth: 1, rate_iops: 200 };
const SPACE_POLL_MS = 200;
const MiB = 2 ** 20;
/** snapshot.list calls timed in the memory-full scenario. */
const MEMORY_FULL_LIST_CALLS = 20;

export interface ScenarioResult { name: ScenarioName; ok: boolean; error?: string; seconds: number; data: unknown }

function latencySummary(ms: number[]): { count: number; medianMs: number; p99Ms: number; maxMs: number } {
  return { count: ms.length, medianMs: round(median(ms), 3), p99Ms: round(percentile(ms, 99), 3), maxMs: round(Math.max(...ms), 3) };
}

async function withServer<T>(ctx: BenchContext, args: string[], exportName: string, body: (inst: PeerInstance, ctl: ControlClient) => Promise<T>, dataDir?: string): Promise<T> {
  const inst = await startSnapnbd(ctx, { args, exportName, ...(dataDir !== undefined ? { dataDir } : {}) });
  let ctl: ControlClient | null = null;
  try {
    ctl = await ControlClient.open(inst.controlPath!);
    return await body(inst, ctl);
  } finally {
    ctl?.close();
    await inst.stop();
  }
}

/** Writes `bytes` sequentially from offset 0 (wrapping over `span`), 1 MiB at queue depth 8. */
async function fill(ctx: BenchContext, uri: string, span: number, bytes: number): Promise<void> {
  if (bytes <= 0) return;
  await runFio(uri, 'fill', { rw: 'write', bs: '1M', iodepth: 8, size: Math.min(span, bytes), io_size: bytes, end_fsync: 1 }, [], ctx.workDir);
}

/**
 * `--loop-watch` and `--kernel-stacks` summed per phase of a scenario whose server (`pid`) has
 * stopped (it wrote its loop records at exit, the sampler its samples): `{ loopWatch, kernelStacks }`,
 * each keyed by phase name, present only when its option was given.
 */
function phaseDiagnostics(ctx: BenchContext, pid: number, phases: Record<string, { from: number; to: number; calls: CallWindow[] }>): Record<string, unknown> {
  const each = <T>(f: (p: { from: number; to: number; calls: CallWindow[] }) => T): Record<string, T> =>
    Object.fromEntries(Object.entries(phases).map(([name, p]) => [name, f(p)]));
  const loopDir = ctx.loopWatchDir;
  const stacksDir = ctx.kernelStacksDir;
  return {
    ...(loopDir ? { loopWatch: each((p) => loopWatchSummary(loopDir, pid, p.from, p.to, p.calls)) } : {}),
    ...(stacksDir ? { kernelStacks: each((p) => kernelStacksSummary(stacksDir, pid, p.from, p.to)) } : {}),
  };
}

async function snapshotCreate(ctx: BenchContext, s: ModeSettings): Promise<unknown> {
  const cells = [];
  for (const vol of [{ name: 'vol1g', size: GiB }, { name: 'vol1t', size: TiB }]) {
    for (const written of [0, s.writtenBytes]) {
      cells.push(await withServer(ctx, ['--volume', `${vol.name}=${vol.size}`], vol.name, async (inst, ctl) => {
        await fill(ctx, inst.uri, vol.size, written);
        const create: number[] = [];
        for (let i = 0; i < s.snapshotCount; i++) create.push(await ctl.timed('snapshot.create', { volume: vol.name, name: `s${i}` }));
        const del: number[] = [];
        for (let i = 0; i < s.snapshotCount; i++) del.push(await ctl.timed('snapshot.delete', { volume: vol.name, name: `s${i}` }));
        return { volume: vol.name, volumeBytes: vol.size, writtenBytes: written, create: latencySummary(create), delete: latencySummary(del) };
      }));
    }
  }
  return cells;
}

async function writeStall(ctx: BenchContext, s: ModeSettings): Promise<unknown> {
  const size = ctx.imageBytes;
  // --loop-watch: the server's late turns in each phase (bench/lib/loop-watch-report.ts);
  // --kernel-stacks: where its threads waited in the kernel (bench/lib/kernel-stacks-report.ts).
  let pid = 0;
  const calls: CallWindow[] = [];
  const alone = { from: 0, to: 0 };
  const snapping = { from: 0, to: 0 };
  const data = await withServer(ctx, ['--volume', `stall=${size}`, '--volume', `calm=${STALL_BYSTANDER_BYTES}`], 'stall', async (inst, ctl) => {
    pid = inst.pid;
    const job = { rw: 'randwrite', bs: '4k', iodepth: 32 };
    // A second client on another export, reading light and never touching the disk (the volume
    // is unwritten): its longest read is how long the server as a whole stopped answering.
    const calmUri = inst.uri.replace(/\/stall(\?|$)/, '/calm$1');
    const bystander = (): Promise<Measured> => runFio(calmUri, 'stall-bystander', STALL_BYSTANDER_JOB, fioTimeBased(s.stallRuntimeS), ctx.workDir);
    alone.from = hrtimeUs();
    const [baseline, calmAlone] = await Promise.all([runFio(inst.uri, 'stall-base', job, fioTimeBased(s.stallRuntimeS), ctx.workDir), bystander()]);
    alone.to = hrtimeUs();
    let stop = false;
    const creates: number[] = [];
    const snapLoop = (async () => {
      let i = 0;
      while (!stop) {
        await new Promise((r) => setTimeout(r, STALL_SNAPSHOT_INTERVAL_MS));
        if (stop) break;
        const from = hrtimeUs();
        creates.push(await ctl.timed('snapshot.create', { volume: 'stall', name: `t${i++}` }));
        calls.push([from, hrtimeUs(), 'snapshot.create']);
      }
    })();
    try {
      snapping.from = hrtimeUs();
      const [during, calmDuring] = await Promise.all([runFio(inst.uri, 'stall-snap', job, fioTimeBased(s.stallRuntimeS), ctx.workDir), bystander()]);
      snapping.to = hrtimeUs();
      return {
        runtimeS: s.stallRuntimeS,
        withoutSnapshots: { maxLatMs: round(baseline.latMaxMs ?? NaN, 3), p99Ms: round(baseline.latP99Ms ?? NaN, 3), iops: round(baseline.iops, 0), bystanderMaxLatMs: round(calmAlone.latMaxMs ?? NaN, 3) },
        withSnapshots: { maxLatMs: round(during.latMaxMs ?? NaN, 3), p99Ms: round(during.latP99Ms ?? NaN, 3), iops: round(during.iops, 0), bystanderMaxLatMs: round(calmDuring.latMaxMs ?? NaN, 3), snapshots: creates.length, create: creates.length ? latencySummary(creates) : null },
      };
    } finally {
      stop = true;
      await snapLoop;
    }
  });
  return { ...data, ...phaseDiagnostics(ctx, pid, { withoutSnapshots: { ...alone, calls: [] }, withSnapshots: { ...snapping, calls } }) };
}

async function snapshotDelete(ctx: BenchContext, s: ModeSettings): Promise<unknown> {
  const size = Math.min(GiB, Math.max(ctx.imageBytes, s.writtenBytes));
  const written = Math.min(size, s.writtenBytes);
  return withServer(ctx, ['--volume', `del=${size}`], 'del', async (inst, ctl) => {
    await fill(ctx, inst.uri, size, written);
    await ctl.call('snapshot.create', { volume: 'del', name: 'old' });
    // Overwrite: the snapshot now holds the only reference to the first copy of the data.
    await fill(ctx, inst.uri, size, written);
    const dataDir = inst.dataDir!;
    const before = allocatedBytes(dataDir);
    const deleteMs = await ctl.timed('snapshot.delete', { volume: 'del', name: 'old' });
    const immediately = allocatedBytes(dataDir);
    const t0 = Date.now();
    let after = immediately;
    while (before - after < written * 0.9 && Date.now() - t0 < s.spaceSettleMs) {
      await new Promise((r) => setTimeout(r, SPACE_POLL_MS));
      after = allocatedBytes(dataDir);
    }
    return {
      volumeBytes: size, writtenBytes: written, deleteMs: round(deleteMs, 3),
      allocatedBeforeMiB: round(before / MiB, 1), allocatedAfterMiB: round(after / MiB, 1),
      returnedMiB: round((before - after) / MiB, 1), returnedImmediatelyMiB: round((before - immediately) / MiB, 1),
      expectedMiB: round(written / MiB, 1), settleMs: Date.now() - t0,
    };
  });
}

async function memory(ctx: BenchContext, s: ModeSettings): Promise<unknown> {
  return withServer(ctx, ['--volume', `mem=${TiB}`], 'mem', async (inst, ctl) => {
    const start = memoryOf(inst.pid);
    const per = Math.max(MiB, Math.floor(s.writtenBytes / s.memorySnapshots / MiB) * MiB);
    for (let i = 0; i < s.memorySnapshots; i++) {
      // Spread over the whole TiB, different offsets each round, so map pages multiply.
      await runFio(inst.uri, 'mem', { rw: 'randwrite', bs: '1M', iodepth: 8, io_size: per, norandommap: 1, randrepeat: 0 }, [], ctx.workDir);
      await ctl.call('snapshot.create', { volume: 'mem', name: `m${i}` });
    }
    const end = memoryOf(inst.pid);
    return {
      volumeBytes: TiB, snapshots: s.memorySnapshots, writtenBytes: per * s.memorySnapshots,
      startRssMiB: round(start.rss / MiB, 1), peakRssMiB: round(end.hwm / MiB, 1), endRssMiB: round(end.rss / MiB, 1),
    };
  });
}

/** Control-plane scenario: snapshots are taken in groups, each group after this much random rewriting. */
const CONTROL_GROUP = 10;
const CONTROL_REWRITE_BYTES = 4 * MiB;

interface StatsAnswer { eventLoop?: { maxMs: number }; store: { liveBytes: number; allocatedBytes: number } }

/**
 * The control-plane loop: a volume with N snapshots and data written; snapshot.list,
 * volume.info, server.stats, snapshot.diff, snapshot create and delete (the deletes free slots, so
 * the background compactor runs passes) over and over, beside fio 4 KiB random I/O on another
 * volume. fio's longest completion and p99.9, the server's event-loop delay (server.stats), and
 * each call's round trip.
 */
async function controlPlane(ctx: BenchContext, s: ModeSettings): Promise<unknown> {
  const cpSize = Math.max(s.controlWrittenBytes, 64 * MiB);
  const ioSize = ctx.imageBytes;
  // --loop-watch: the server's late turns beside the harness's calls (bench/lib/loop-watch-report.ts).
  let pid = 0;
  const calls: CallWindow[] = [];
  const alone = { from: 0, to: 0 };
  const during = { from: 0, to: 0 };
  const data = await withServer(ctx, ['--volume', `cp=${cpSize}`, '--volume', `io=${ioSize}`], 'cp', async (inst, ctl) => {
    pid = inst.pid;
    const timed = async (method: string, params: Record<string, unknown>): Promise<number> => {
      const from = hrtimeUs();
      const ms = await ctl.timed(method, params);
      calls.push([from, hrtimeUs(), method]);
      return ms;
    };
    const ioUri = inst.uri.replace(/\/cp$/, '/io');
    await fill(ctx, inst.uri, cpSize, s.controlWrittenBytes);
    await fill(ctx, ioUri, ioSize, ioSize);
    for (let i = 0; i < s.controlSnapshots; i++) {
      if (i % CONTROL_GROUP === CONTROL_GROUP - 1) {
        await runFio(inst.uri, 'rewrite', { rw: 'randwrite', bs: '64k', iodepth: 8, io_size: CONTROL_REWRITE_BYTES, norandommap: 1, randrepeat: 0 }, [], ctx.workDir);
      }
      await ctl.call('snapshot.create', { volume: 'cp', name: `p${i}` });
    }
    const job = { rw: 'randrw', rwmixread: 50, bs: '4k', iodepth: 32 };
    await ctl.call('server.stats', {}); // starts the event-loop monitor
    /** The longest eventLoopSeconds server.stats takes (protocol/control.md). */
    const STATS_WINDOW_MAX_SECONDS = 300;
    // Each stats call asks for the seconds since the previous one (plus the second it began in).
    let statsAt = performance.now();
    const sinceStats = (): { eventLoopSeconds: number } => {
      const now = performance.now();
      const n = Math.min(STATS_WINDOW_MAX_SECONDS, Math.ceil((now - statsAt) / 1000) + 1);
      statsAt = now;
      return { eventLoopSeconds: n };
    };
    // A build from before eventLoopSeconds (--compare) refuses it: its window is since the last call.
    const stats = async (): Promise<StatsAnswer> => {
      const p = sinceStats();
      return await ctl.call('server.stats', p).catch(() => ctl.call('server.stats', {})) as StatsAnswer;
    };
    alone.from = hrtimeUs();
    const baseline = await runFio(ioUri, 'cp-base', job, fioTimeBased(s.controlRuntimeS), ctx.workDir);
    alone.to = hrtimeUs();
    // The loop's delay under fio alone: what the data path costs before any control call.
    const before = await stats();
    const t = { list: [] as number[], info: [] as number[], stats: [] as number[], diff: [] as number[], create: [] as number[], delete: [] as number[] };
    let loopMaxMs = 0;
    let rounds = 0;
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        t.list.push(await timed('snapshot.list', { volume: 'cp' }));
        t.info.push(await timed('volume.info', { name: 'cp' }));
        const t0 = process.hrtime.bigint();
        const st = await stats();
        t.stats.push(Number(process.hrtime.bigint() - t0) / 1e6);
        calls.push([Number(t0 / 1000n), hrtimeUs(), 'server.stats']);
        loopMaxMs = Math.max(loopMaxMs, st.eventLoop?.maxMs ?? NaN);
        t.diff.push(await timed('snapshot.diff', { volume: 'cp', from: 'p0' }));
        t.create.push(await timed('snapshot.create', { volume: 'cp', name: `loop${rounds}` }));
        // An old snapshot: it holds rewritten chunks alone, so its delete frees slots.
        const victim = rounds + 1 < s.controlSnapshots ? `p${rounds + 1}` : `loop${rounds}`;
        t.delete.push(await timed('snapshot.delete', { volume: 'cp', name: victim }));
        rounds++;
      }
    })();
    let withLoop;
    during.from = hrtimeUs();
    try {
      withLoop = await runFio(ioUri, 'cp-io', job, fioTimeBased(s.controlRuntimeS), ctx.workDir);
    } finally {
      stop = true;
      await loop;
      during.to = hrtimeUs();
    }
    const after = await stats();
    loopMaxMs = Math.max(loopMaxMs, after.eventLoop?.maxMs ?? NaN);
    const fio = (m: typeof withLoop) => ({ maxLatMs: round(m.latMaxMs ?? NaN, 3), p999Ms: round(m.latP999Ms ?? NaN, 3), p99Ms: round(m.latP99Ms ?? NaN, 3), iops: round(m.iops, 0) });
    return {
      snapshots: s.controlSnapshots, writtenBytes: s.controlWrittenBytes, runtimeS: s.controlRuntimeS, rounds,
      fioWithout: fio(baseline), fioDuring: fio(withLoop), eventLoopMaxMs: loopMaxMs, eventLoopMaxMsWithout: before.eventLoop?.maxMs ?? NaN,
      liveBytesBefore: before.store.liveBytes, liveBytesAfter: after.store.liveBytes,
      snapshotList: latencySummary(t.list), volumeInfo: latencySummary(t.info), serverStats: latencySummary(t.stats),
      snapshotDiff: latencySummary(t.diff), snapshotCreate: latencySummary(t.create), snapshotDelete: latencySummary(t.delete),
    };
  });
  return { ...data, ...phaseDiagnostics(ctx, pid, { fioAlone: { ...alone, calls: [] }, duringLoop: { ...during, calls } }) };
}

/**
 * Peak RSS of a fully written volume (1 TiB: 16 M chunks of 64 KiB) with 100 snapshots. The store
 * is built at the engine level (bench/fill-store.ts: every chunk mapped, no data written), then the
 * server opens it and takes the snapshots, each after 64 KiB random writes spread over the volume.
 */
async function memoryFull(ctx: BenchContext, s: ModeSettings): Promise<unknown> {
  const dataDir = join(ctx.workDir, 'memory-full-data');
  const filled = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'fill-store.ts'), dataDir, String(s.memoryFullBytes), 'full'], { timeoutMs: 60 * 60_000, cwd: REPO_ROOT });
  const fill = JSON.parse(filled.stdout.trim().split('\n').pop() ?? '{}') as { chunks: number; totalMs: number };
  const t0 = Date.now();
  return withServer(ctx, [], 'full', async (inst, ctl) => {
    const openS = (Date.now() - t0) / 1000;
    const opened = memoryOf(inst.pid);
    const per = Math.max(MiB, Math.floor(s.writtenBytes / 8 / s.memoryFullSnapshots / MiB) * MiB);
    const list: number[] = [];
    for (let i = 0; i < s.memoryFullSnapshots; i++) {
      await runFio(inst.uri, 'memfull', { rw: 'randwrite', bs: '64k', iodepth: 8, io_size: per, norandommap: 1, randrepeat: 0 }, [], ctx.workDir);
      await ctl.call('snapshot.create', { volume: 'full', name: `m${i}` });
    }
    // snapshot.list of them all (issue 15: < 50 ms at any volume size), and the server's
    // event-loop delay over those calls (server.stats starts its monitor at the first call).
    await ctl.call('server.stats', {});
    for (let i = 0; i < MEMORY_FULL_LIST_CALLS; i++) list.push(await ctl.timed('snapshot.list', { volume: 'full' }));
    const stats = await ctl.call('server.stats', {}) as StatsAnswer;
    const end = memoryOf(inst.pid);
    return {
      volumeBytes: s.memoryFullBytes, chunks: fill.chunks, fillS: round(fill.totalMs / 1000, 1), openToReadyS: round(openS, 1),
      snapshots: s.memoryFullSnapshots, rewrittenPerSnapshotBytes: per,
      openedRssMiB: round(opened.rss / MiB, 1), peakRssMiB: round(end.hwm / MiB, 1), endRssMiB: round(end.rss / MiB, 1),
      snapshotList: latencySummary(list), eventLoopMaxMsDuringList: stats.eventLoop?.maxMs ?? null,
    };
  }, dataDir);
}

const RUNNERS: Record<ScenarioName, (ctx: BenchContext, s: ModeSettings) => Promise<unknown>> = {
  'snapshot-create': snapshotCreate,
  'write-stall': writeStall,
  'snapshot-delete': snapshotDelete,
  memory,
  'control-plane': controlPlane,
  'memory-full': memoryFull,
};

export async function runScenario(name: ScenarioName, ctx: BenchContext, s: ModeSettings): Promise<ScenarioResult> {
  const t0 = Date.now();
  try {
    const data = await RUNNERS[name](ctx, s);
    return { name, ok: true, seconds: (Date.now() - t0) / 1000, data };
  } catch (e) {
    return { name, ok: false, error: (e as Error).message.split('\n')[0] ?? 'error', seconds: (Date.now() - t0) / 1000, data: null };
  }
}
