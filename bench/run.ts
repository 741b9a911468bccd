// The benchmark harness (issue 6): snapnbd beside nbdkit file, nbdkit --filter=cow and qemu-nbd
// on one raw image, measured with fio --ioengine=nbd and nbdcopy, plus snapnbd's snapshot costs.
// Prints a markdown table and writes a JSON result to bench/results/. See bench/README.md.
//   npm run bench -- --smoke | --quick | (full) [--only ...] [--workloads ...]
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { BASE_PEER, PEERS, USAGE, parseOptions, type CacheMode, type Options, type PeerName, type Workload } from './lib/config.ts';
import { fioTimeBased, runFio, runNbdcopy, type Measured } from './lib/clients.ts';
import { ControlClient } from './lib/control.ts';
import { createImage } from './lib/image.ts';
import { dropCaches, machineInfo, processCpuSeconds, processDiskBytes, processTimes, recycleBytesFor, recycleFreeMemory, warm, writeBack } from './lib/machine.ts';
import { REPO_ROOT, SNAPNBD_BIN, exportNameOf, startPeer, writableCopy, type BenchContext, type PeerInstance } from './lib/peers.ts';
import { installExitHandlers } from './lib/procs.ts';
import { computeRatios, computeTlsCosts, evaluateTargets, markdown, type BenchResult, type Row } from './lib/report.ts';
import { runScenario } from './lib/scenarios.ts';
import { startBridge, viaTls } from './lib/tls.ts';
import { median, round } from './lib/stats.ts';

function log(opts: Options, msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
  void opts;
}

/** Prepares a snapnbd snapshot workload: fill the volume, then take N snapshots. */
async function prefillThenSnapshot(ctx: BenchContext, inst: PeerInstance, n: number): Promise<void> {
  await runFio(inst.uri, 'prefill', { rw: 'write', bs: '1M', iodepth: 8, end_fsync: 1 }, [], ctx.workDir);
  if (n === 0) return;
  const ctl = await ControlClient.open(inst.controlPath!);
  try {
    const volume = exportNameOf(ctx.image);
    for (let i = 0; i < n; i++) await ctl.call('snapshot.create', { volume, name: `pre${i}` });
  } finally {
    ctl.close();
  }
}

async function measureOnce(ctx: BenchContext, opts: Options, w: Workload, peer: PeerName, cache: CacheMode): Promise<{ m: Measured; note: string | null }> {
  const inst = await startPeer(ctx, peer, w.writes, viaTls(w.via) ? w.via : null);
  const bridge = w.via ? await startBridge(inst, w.via, ctx.workDir).catch(async (e: unknown) => { await inst.stop(); throw e; }) : null;
  try {
    if (w.prefillThenSnapshots !== undefined) await prefillThenSnapshot(ctx, inst, w.prefillThenSnapshots);
    if (cache === 'cold') {
      dropCaches();
    } else {
      writeBack();
      warm(ctx.image);
      if (peer === 'nbdkit-file' && w.writes) warm(writableCopy(ctx));
    }
    // Every write run gets pages freed a moment ago for its new page cache, not what the run
    // before it happened to free (machine.ts, recycleFreeMemory).
    if (w.writes && !opts.noRecycle) recycleFreeMemory(ctx.workDir, recycleBytesFor(ctx.imageBytes));
    let m: Measured;
    const cpu0 = processCpuSeconds(inst.pid);
    const disk0 = processDiskBytes(inst.pid);
    const times0 = processTimes(inst.pid);
    switch (w.client) {
      case 'fio':
        m = await runFio(bridge?.uri ?? inst.uri, w.name, w.fio ?? {}, fioTimeBased(opts.settings.runtimeS), ctx.workDir);
        break;
      case 'nbdcopy-in':
        m = await runNbdcopy(ctx.image, inst.uri, ctx.imageBytes);
        break;
      case 'nbdcopy-out':
        m = await runNbdcopy(inst.uri, 'null:', ctx.imageBytes);
        break;
    }
    const cpu1 = processCpuSeconds(inst.pid);
    m.serverCpuS = cpu0 !== null && cpu1 !== null ? round(cpu1 - cpu0, 2) : null;
    // Whether a row reads from the disk (cold runs) and how many bytes it dirties (write amplification).
    const disk1 = processDiskBytes(inst.pid);
    const times1 = processTimes(inst.pid);
    if (times0 && times1) {
      const gib = m.bytes / 2 ** 30;
      m.serverSplit = { userMsPerGiB: round(((times1.user - times0.user) * 1000) / gib, 0), sysMsPerGiB: round(((times1.sys - times0.sys) * 1000) / gib, 0),
        minorFaultsPerGiB: round((times1.minflt - times0.minflt) / gib, 0), majorFaultsPerGiB: round((times1.majflt - times0.majflt) / gib, 0) };
    }
    m.serverDiskReadBytes = disk0 && disk1 ? disk1.read - disk0.read : null;
    m.serverDiskWriteBytes = disk0 && disk1 ? disk1.write - disk0.write : null;
    return { m, note: inst.note };
  } finally {
    await bridge?.stop();
    await inst.stop();
    if (ctx.cpuProfDir && peer.startsWith('snapnbd')) nameProfiles(ctx.cpuProfDir, inst.pid, `${w.name}-${peer}-${cache}`);
  }
}

/** Server CPU milliseconds per GiB the client moved. */
function cpuMsPerGiB(m: Measured): number | null {
  return m.serverCpuS === null || m.serverCpuS === undefined || m.bytes <= 0 ? null : (m.serverCpuS * 1000) / (m.bytes / 2 ** 30);
}

/** ", server disk read X MiB, dirtied Y MiB" for the log line ('' when unknown). */
function diskNote(m: Measured): string {
  if (m.serverDiskReadBytes === null || m.serverDiskReadBytes === undefined || m.serverDiskWriteBytes === null || m.serverDiskWriteBytes === undefined) return '';
  return `, server disk read ${(m.serverDiskReadBytes / 2 ** 20).toFixed(1)} MiB, dirtied ${(m.serverDiskWriteBytes / 2 ** 20).toFixed(0)} MiB`;
}

/** " (user X, sys Y ms/GiB; N minor faults/GiB)" for the log line ('' when unknown). */
function splitNote(m: Measured): string {
  const s = m.serverSplit;
  return s ? ` (user ${s.userMsPerGiB}, sys ${s.sysMsPerGiB} ms/GiB; ${s.minorFaultsPerGiB} minor, ${s.majorFaultsPerGiB} major faults/GiB)` : '';
}

/** node --cpu-prof names files CPU.<date>.<pid>.<thread>.<seq>; name them after the run instead. */
function nameProfiles(dir: string, pid: number, label: string): void {
  for (const f of readdirSync(dir)) {
    const m = new RegExp(`^CPU\\.[\\d.]+\\.${pid}\\.(\\d+)\\.\\d+\\.cpuprofile$`).exec(f);
    if (!m) continue;
    // Thread 0 is the server's main thread; others are tsx's loader thread.
    const thread = m[1] === '0' ? '' : `-thread${m[1]}`;
    let n = 1;
    while (existsSync(join(dir, `${label}-${n}${thread}.cpuprofile`))) n++;
    renameSync(join(dir, f), join(dir, `${label}-${n}${thread}.cpuprofile`));
  }
}

async function main(): Promise<number> {
  let opts: Options | 'help';
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (opts === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  installExitHandlers();
  const t0 = Date.now();
  const s = opts.settings;
  if (s.cache.includes('cold') && process.getuid?.() !== 0) {
    process.stderr.write('bench: cold-cache runs need root (drop_caches); use --cache hot\n');
    return 2;
  }
  const workDir = mkdtempSync(join(opts.tmpBase ?? tmpdir(), 'snapnbd-bench-'));
  const cleanup = (): void => { if (!opts.keep) rmSync(workDir, { recursive: true, force: true }); };
  process.on('exit', cleanup);
  const image = join(workDir, 'bench.raw');
  log(opts, `mode ${opts.mode}; image ${image} (${s.imageBytes / 2 ** 20} MiB); peers ${opts.peers.join(',')}`);
  createImage(image, s.imageBytes);
  if (opts.cpuProfDir) mkdirSync(opts.cpuProfDir, { recursive: true });
  if (opts.loopWatchDir) mkdirSync(opts.loopWatchDir, { recursive: true });
  if (opts.kernelStacksDir) mkdirSync(opts.kernelStacksDir, { recursive: true });
  const ctx: BenchContext = { workDir, image, imageBytes: s.imageBytes, snapnbdEnv: opts.snapnbdEnv, snapnbdBin: resolve(opts.snapnbdBin ?? SNAPNBD_BIN), compareBin: opts.compareBin ? resolve(opts.compareBin) : null, cpuProfDir: opts.cpuProfDir, loopWatchDir: opts.loopWatchDir, kernelStacksDir: opts.kernelStacksDir, verbose: opts.verbose };

  const rows: Row[] = [];
  for (const cache of s.cache) {
    for (const w of opts.workloads) {
      const peers: PeerName[] = PEERS.filter((p) => opts.peers.includes(p) && (w.peers ?? PEERS).includes(p));
      // --compare: the other build runs right after this one, wherever this one runs.
      if (ctx.compareBin && peers.includes('snapnbd')) peers.splice(peers.indexOf('snapnbd') + 1, 0, BASE_PEER);
      const got = new Map<PeerName, { reps: Measured[]; note: string | null; error: string | null }>();
      for (const p of peers) got.set(p, { reps: [], note: null, error: null });
      // Peers interleaved within each repetition, so drift in the machine hits all of them alike;
      // every other repetition in reverse order, so neither side of a pair always goes first.
      for (let rep = 0; rep < s.reps; rep++) {
        for (const p of rep % 2 === 0 ? peers : [...peers].reverse()) {
          const g = got.get(p)!;
          if (g.error) continue;
          try {
            const { m, note } = await measureOnce(ctx, opts, w, p, cache);
            g.reps.push(m);
            g.note = note;
            const cpu = cpuMsPerGiB(m);
            log(opts, `${cache} ${w.name} ${p} rep ${rep + 1}/${s.reps}: ${m.mbps.toFixed(1)} MB/s ${m.iops.toFixed(0)} IOPS${cpu === null ? '' : `, server CPU ${cpu.toFixed(0)} ms/GiB`}${diskNote(m)}${splitNote(m)}`);
          } catch (e) {
            g.error = (e as Error).message;
            log(opts, `${cache} ${w.name} ${p}: ERROR ${g.error.split('\n').slice(0, 3).join(' | ')}`);
          }
        }
      }
      for (const p of peers) {
        const g = got.get(p)!;
        const lat = g.reps.map((r) => r.latMaxMs).filter((x): x is number => x !== null);
        const cpu = g.reps.map(cpuMsPerGiB).filter((x): x is number => x !== null);
        rows.push({
          workload: w.name, peer: p, cache, primary: w.primary, reps: g.reps,
          mbps: round(median(g.reps.map((r) => r.mbps)), 1),
          iops: round(median(g.reps.map((r) => r.iops)), 0),
          latMaxMs: lat.length ? round(Math.max(...lat), 3) : null,
          cpuMsPerGiB: cpu.length ? round(median(cpu), 0) : null,
          note: g.note, error: g.error,
        });
      }
    }
  }

  const scenarios = [];
  for (const name of opts.scenarios) {
    log(opts, `scenario ${name}`);
    const r = await runScenario(name, ctx, s);
    log(opts, `scenario ${name}: ${r.ok ? JSON.stringify(r.data) : `ERROR ${r.error ?? ''}`}`);
    scenarios.push(r);
  }

  const ratios = computeRatios(rows);
  const result: BenchResult = {
    schema: 1,
    date: new Date().toISOString(),
    mode: opts.mode,
    settings: s,
    machine: machineInfo(opts.snapnbdEnv, ctx.snapnbdBin, ctx.compareBin),
    snapnbdEnv: opts.snapnbdEnv,
    durationS: Math.round((Date.now() - t0) / 1000),
    rows, ratios, tlsCosts: computeTlsCosts(rows), scenarios,
    targets: evaluateTargets(rows, ratios, scenarios),
  };
  const out = opts.out ?? join(REPO_ROOT, 'bench', 'results', `${result.date.replace(/[:.]/g, '-')}-${opts.mode}.json`);
  mkdirSync(join(out, '..'), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(markdown(result));
  process.stdout.write(`\nJSON: ${relative(process.cwd(), out)}\n`);
  return 0;
}

main().then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
