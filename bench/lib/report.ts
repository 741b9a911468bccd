// Turns a run into the markdown table (stdout, bench/README.md) and evaluates the targets of
// issue 6 from the same numbers. Ratios are snapnbd / peer within one run: the machine is noisy,
// so only ratios measured side by side mean anything.
import type { CacheMode, PeerName } from './config.ts';
import type { Measured } from './clients.ts';
import type { CheckoutInfo, MachineInfo } from './machine.ts';
import type { ScenarioResult } from './scenarios.ts';
import { round } from './stats.ts';

export interface Row {
  workload: string;
  peer: PeerName;
  cache: CacheMode;
  primary: 'iops' | 'mbps';
  reps: Measured[];
  /** Medians over reps. */
  mbps: number;
  iops: number;
  latMaxMs: number | null;
  /** Median server CPU (user + system) per GiB moved, ms; null when not measured. */
  cpuMsPerGiB?: number | null;
  note: string | null;
  error: string | null;
}

export interface BenchResult {
  schema: 1;
  date: string;
  mode: string;
  settings: unknown;
  machine: MachineInfo;
  snapnbdEnv: Record<string, string>;
  durationS: number;
  rows: Row[];
  ratios: { workload: string; cache: CacheMode; peer: PeerName; ratio: number }[];
  /** Each server's TLS rows against its own plain run through the same bridge (issue 14). */
  tlsCosts?: TlsCost[];
  scenarios: ScenarioResult[];
  targets: Target[];
}

export interface Target { target: string; measured: string; met: boolean | null }

const COMPARED: readonly PeerName[] = ['snapnbd-base', 'snapnbd-unix', 'nbdkit-file', 'nbdkit-cow', 'qemu-nbd'];

function value(r: Row): number { return r.primary === 'iops' ? r.iops : r.mbps; }

export function computeRatios(rows: Row[]): BenchResult['ratios'] {
  const out: BenchResult['ratios'] = [];
  for (const ours of rows.filter((r) => r.peer === 'snapnbd' && !r.error)) {
    for (const peer of rows.filter((r) => r.workload === ours.workload && r.cache === ours.cache && r.peer !== 'snapnbd' && !r.error)) {
      if (value(peer) > 0) out.push({ workload: ours.workload, cache: ours.cache, peer: peer.peer, ratio: round(value(ours) / value(peer), 3) });
    }
  }
  return out;
}

/** A `tls-*` or `psk-*` row of one peer against its `bridge-*` row: the same path in clear. */
export interface TlsCost { workload: string; plain: string; cache: CacheMode; peer: PeerName; primary: Row['primary']; tls: number; clear: number; ratio: number }

export function computeTlsCosts(rows: Row[]): TlsCost[] {
  const out: TlsCost[] = [];
  for (const t of rows.filter((r) => /^(tls|psk)-/.test(r.workload) && !r.error)) {
    const plain = `bridge-${t.workload.replace(/^(tls|psk)-/, '')}`;
    const c = rows.find((r) => r.workload === plain && r.peer === t.peer && r.cache === t.cache && !r.error);
    if (c && value(c) > 0) out.push({ workload: t.workload, plain, cache: t.cache, peer: t.peer, primary: t.primary, tls: value(t), clear: value(c), ratio: round(value(t) / value(c), 3) });
  }
  return out;
}

const fmt = (x: number | null | undefined, d = 0): string => x === null || x === undefined || Number.isNaN(x) ? '–' : x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

export function evaluateTargets(rows: Row[], ratios: BenchResult['ratios'], scenarios: ScenarioResult[]): Target[] {
  const t: Target[] = [];
  const ratio = (w: string, c: CacheMode, p: PeerName): number | undefined => ratios.find((r) => r.workload === w && r.cache === c && r.peer === p)?.ratio;
  const fioPeerWorkloads = [...new Set(rows.filter((r) => r.peer !== 'snapnbd' && !r.workload.startsWith('nbdcopy')).map((r) => r.workload))];
  for (const peer of ['nbdkit-cow', 'qemu-nbd'] as const) {
    for (const cache of ['hot', 'cold'] as const) {
      const rs = fioPeerWorkloads.map((w) => ({ w, r: ratio(w, cache, peer) })).filter((x): x is { w: string; r: number } => x.r !== undefined);
      if (rs.length === 0) continue;
      const worst = rs.reduce((a, b) => (b.r < a.r ? b : a));
      const losing = rs.filter((x) => x.r < 1).map((x) => `${x.w} ${x.r}×`);
      t.push({ target: `every fio workload ≥ 1.0× ${peer} (${cache})`, measured: losing.length ? `below: ${losing.join(', ')}` : `min ${worst.r}× (${worst.w})`, met: losing.length === 0 });
    }
  }
  const rr = ratio('randread-4k', 'hot', 'nbdkit-file');
  if (rr !== undefined) t.push({ target: 'randread-4k hot ≥ 1.0× nbdkit-file', measured: `${rr}×`, met: rr >= 1 });
  // Issue 15's floors against the plain file server: reads match it, writes (which go through
  // the copy-on-write map) come within 0.8.
  for (const [w, floor] of [['seqread-1m', 1.0], ['seqwrite-1m', 0.8]] as const) {
    for (const cache of ['hot', 'cold'] as const) {
      const r = ratio(w, cache, 'nbdkit-file');
      if (r !== undefined) t.push({ target: `${w} ${cache} ≥ ${floor.toFixed(1)}× nbdkit-file`, measured: `${r}×`, met: r >= floor });
    }
  }
  for (const cache of ['hot', 'cold'] as const) {
    const base = rows.find((r) => r.workload === 'randwrite-4k-snap0' && r.cache === cache && r.peer === 'snapnbd' && !r.error);
    for (const n of [1, 100]) {
      const after = rows.find((r) => r.workload === `randwrite-4k-snap${n}` && r.cache === cache && r.peer === 'snapnbd' && !r.error);
      if (base && after && base.iops > 0) {
        const r = round(after.iops / base.iops, 3);
        t.push({ target: `randwrite-4k after ${n} snapshot(s) ≥ 0.8× before (${cache})`, measured: `${r}×`, met: r >= 0.8 });
      }
    }
  }
  const sc = scenarios.find((s) => s.name === 'snapshot-create');
  if (sc?.ok) {
    const cells = sc.data as { volume: string; writtenBytes: number; create: { p99Ms: number } }[];
    const worst = Math.max(...cells.map((c) => c.create.p99Ms));
    t.push({ target: 'snapshot.create p99 < 10 ms (1 GiB and 1 TiB, with and without data)', measured: `worst p99 ${worst} ms`, met: worst < 10 });
  }
  const st = scenarios.find((s) => s.name === 'write-stall');
  if (st?.ok) {
    const d = st.data as { withSnapshots: { maxLatMs: number; bystanderMaxLatMs?: number } };
    const by = d.withSnapshots.bystanderMaxLatMs !== undefined ? ` (a bystander client's longest read: ${d.withSnapshots.bystanderMaxLatMs} ms)` : '';
    t.push({ target: 'longest write stall during snapshots < 50 ms', measured: `${d.withSnapshots.maxLatMs} ms${by}`, met: d.withSnapshots.maxLatMs < 50 });
  }
  const mem = scenarios.find((s) => s.name === 'memory');
  if (mem?.ok) {
    const d = mem.data as { peakRssMiB: number };
    t.push({ target: 'peak RSS < 200 MiB (1 TiB, 100 snapshots, data written)', measured: `${d.peakRssMiB} MiB`, met: d.peakRssMiB < 200 });
  }
  const cp = scenarios.find((s) => s.name === 'control-plane');
  if (cp?.ok) {
    const d = cp.data as { snapshots: number; fioDuring: { maxLatMs: number }; eventLoopMaxMs: number; eventLoopMaxMsWithout?: number; snapshotList: { maxMs: number } };
    const alone = d.eventLoopMaxMsWithout !== undefined ? ` (fio alone, no control call: ${d.eventLoopMaxMsWithout} ms)` : '';
    t.push({ target: 'fio max completion < 50 ms beside the control-plane loop', measured: `${d.fioDuring.maxLatMs} ms`, met: d.fioDuring.maxLatMs < 50 });
    t.push({ target: 'event-loop delay < 20 ms during the control-plane loop', measured: `${d.eventLoopMaxMs} ms${alone}`, met: d.eventLoopMaxMs < 20 });
    t.push({ target: `snapshot.list of ${d.snapshots} < 50 ms`, measured: `max ${d.snapshotList.maxMs} ms`, met: d.snapshotList.maxMs < 50 });
  }
  const mf = scenarios.find((s) => s.name === 'memory-full');
  if (mf?.ok) {
    const d = mf.data as { volumeBytes: number; snapshots: number; peakRssMiB: number };
    const tib = d.volumeBytes / 2 ** 40;
    t.push({ target: `peak RSS < 400 MiB (${tib} TiB fully written, ${d.snapshots} snapshots)`, measured: `${d.peakRssMiB} MiB`, met: tib >= 1 ? d.peakRssMiB < 400 : null });
  }
  for (const s of scenarios.filter((x) => !x.ok)) t.push({ target: `scenario ${s.name}`, measured: `not measured: ${s.error ?? ''}`, met: null });
  return t;
}

export function markdown(res: BenchResult): string {
  const L: string[] = [];
  const m = res.machine;
  L.push(`Run ${res.date}, mode ${res.mode}, commit ${m.commit.slice(0, 12)}${m.dirty ? ' (dirty tree)' : ''}; ${m.cpu} × ${m.cpus}, kernel ${m.kernel}; Node ${m.node}, ${m.fio}, ${m.nbdkit}, ${m.qemu}, ${m.nbdcopy}; UV_THREADPOOL_SIZE ${m.uvThreadpoolSize}; ${res.durationS} s.`);
  const build = (c: CheckoutInfo): string => `${c.bin} (commit ${c.commit.slice(0, 12)}${c.dirty ? ', dirty tree' : ''})`;
  if (m.snapnbd) L.push(`snapnbd: ${build(m.snapnbd)}${m.base ? `; base: ${build(m.base)}` : ''}.`);
  L.push('');
  const caches = [...new Set(res.rows.map((r) => r.cache))];
  for (const cache of caches) {
    const rows = res.rows.filter((r) => r.cache === cache);
    const reps = Math.max(...rows.map((r) => r.reps.length), 0);
    L.push(`### Throughput, page cache ${cache} (median of ${reps})`);
    L.push('');
    L.push('| workload | peer | MB/s | IOPS | server CPU ms/GiB | snapnbd / peer |');
    L.push('|---|---|---:|---:|---:|---:|');
    for (const r of rows) {
      const ratio = res.ratios.find((x) => x.workload === r.workload && x.cache === cache && x.peer === r.peer)?.ratio;
      const cell = r.error ? `error: ${r.error.split('\n')[0]!.slice(0, 80)}` : '';
      L.push(`| ${r.workload} | ${r.peer}${r.note ? ' †' : ''} | ${r.error ? cell : fmt(r.mbps, 1)} | ${r.error ? '' : r.primary === 'iops' || r.iops > 0 ? fmt(r.iops) : '–'} | ${fmt(r.cpuMsPerGiB)} | ${r.peer === 'snapnbd' ? '1' : ratio === undefined ? '–' : `${ratio.toFixed(2)}×`} |`);
    }
    L.push('');
    const ws = [...new Set(rows.map((r) => r.workload))];
    L.push(`Ratios snapnbd / peer (${cache}; IOPS for 4 KiB, MB/s for 1 MiB and nbdcopy):`);
    L.push('');
    // Only the peers that ran (snapnbd-base only with --compare).
    const compared = COMPARED.filter((p) => rows.some((r) => r.peer === p));
    L.push(`| workload | ${compared.join(' | ')} |`);
    L.push(`|---|${compared.map(() => '---:').join('|')}|`);
    for (const w of ws) {
      const cells = compared.map((p) => res.ratios.find((x) => x.workload === w && x.cache === cache && x.peer === p)?.ratio);
      if (cells.every((c) => c === undefined)) continue;
      L.push(`| ${w} | ${cells.map((c) => (c === undefined ? '–' : `${c.toFixed(2)}×`)).join(' | ')} |`);
    }
    L.push('');
  }
  const costs = res.tlsCosts ?? computeTlsCosts(res.rows);
  if (costs.length > 0) {
    L.push('### TLS against our own plain run (the same bridge in clear; IOPS for 4 KiB, MB/s for 1 MiB)');
    L.push('');
    L.push('| workload | cache | peer | with TLS | in clear | TLS / clear |');
    L.push('|---|---|---|---:|---:|---:|');
    for (const c of costs) L.push(`| ${c.workload} | ${c.cache} | ${c.peer} | ${fmt(c.tls, c.primary === 'iops' ? 0 : 1)} | ${fmt(c.clear, c.primary === 'iops' ? 0 : 1)} | ${c.ratio.toFixed(2)}× |`);
    L.push('');
  }
  if (res.rows.some((r) => r.note)) {
    L.push(`† ${[...new Set(res.rows.filter((r) => r.note).map((r) => r.note))].join('; ')}`);
    L.push('');
  }
  L.push('### Snapshot costs (snapnbd)');
  L.push('');
  for (const s of res.scenarios) {
    if (!s.ok) { L.push(`- ${s.name}: not measured: ${s.error ?? ''}`); continue; }
    if (s.name === 'snapshot-create') {
      L.push('| volume | written | create median ms | create p99 ms | create max ms | delete median ms | delete p99 ms |');
      L.push('|---|---:|---:|---:|---:|---:|---:|');
      for (const c of s.data as { volume: string; writtenBytes: number; create: { medianMs: number; p99Ms: number; maxMs: number }; delete: { medianMs: number; p99Ms: number } }[]) {
        L.push(`| ${c.volume} | ${fmt(c.writtenBytes / 2 ** 20)} MiB | ${c.create.medianMs} | ${c.create.p99Ms} | ${c.create.maxMs} | ${c.delete.medianMs} | ${c.delete.p99Ms} |`);
      }
      L.push('');
    } else {
      L.push(`- ${s.name}: \`${JSON.stringify(s.data)}\``);
    }
  }
  L.push('');
  L.push('### Targets (issue 6)');
  L.push('');
  L.push('| target | measured | met |');
  L.push('|---|---|---|');
  for (const t of res.targets) L.push(`| ${t.target} | ${t.measured} | ${t.met === null ? '–' : t.met ? 'yes' : 'no'} |`);
  L.push('');
  return L.join('\n');
}
