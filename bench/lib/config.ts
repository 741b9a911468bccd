// What a run measures and how long: the three modes, the workload table, the peer names and
// the command-line options. Sizes and durations are named here, not scattered in the code.
import { parseArgs } from 'node:util';
import type { Via } from './tls.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

export const PEERS = ['snapnbd', 'snapnbd-unix', 'nbdkit-file', 'nbdkit-cow', 'qemu-nbd'] as const;
/** The other build of `--compare` (TCP like `snapnbd`); a peer only when that option is given. */
export const BASE_PEER = 'snapnbd-base';
export type PeerName = (typeof PEERS)[number] | typeof BASE_PEER;

export const CACHE_MODES = ['hot', 'cold'] as const;
export type CacheMode = (typeof CACHE_MODES)[number];

export const MODES = ['smoke', 'quick', 'full'] as const;
export type Mode = (typeof MODES)[number];

export interface ModeSettings {
  imageBytes: number;
  /** fio runtime per repetition, seconds. */
  runtimeS: number;
  reps: number;
  cache: CacheMode[];
  /** Data written before the snapshot-cost and memory scenarios (8 GiB in the issue). */
  writtenBytes: number;
  /** snapshot.create calls timed per volume. */
  snapshotCount: number;
  /** Duration of the write-stall run (snapshots every second meanwhile), seconds. */
  stallRuntimeS: number;
  /** Snapshots in the memory scenario. */
  memorySnapshots: number;
  /** How long the delete scenario waits for space to come back to the filesystem, ms. */
  spaceSettleMs: number;
  /** Control-plane scenario: snapshots on the listed volume (500 in the issue), data written to it, loop seconds. */
  controlSnapshots: number;
  controlWrittenBytes: number;
  controlRuntimeS: number;
  /** Memory-full scenario: volume size, every chunk mapped (1 TiB in the issue), and its snapshots. */
  memoryFullBytes: number;
  memoryFullSnapshots: number;
}

export const MODE_SETTINGS: Record<Mode, ModeSettings> = {
  // For CI: every workload and scenario runs once, briefly, on small data. Numbers are not
  // comparable; the point is that the harness still works end to end.
  smoke: { imageBytes: 64 * MiB, runtimeS: 1, reps: 1, cache: ['hot'], writtenBytes: 16 * MiB, snapshotCount: 100, stallRuntimeS: 3, memorySnapshots: 100, spaceSettleMs: 3000,
    controlSnapshots: 10, controlWrittenBytes: 64 * MiB, controlRuntimeS: 2, memoryFullBytes: 4 * GiB, memoryFullSnapshots: 3 },
  quick: { imageBytes: 1 * GiB, runtimeS: 5, reps: 1, cache: ['hot'], writtenBytes: 1 * GiB, snapshotCount: 100, stallRuntimeS: 10, memorySnapshots: 100, spaceSettleMs: 10_000,
    controlSnapshots: 100, controlWrittenBytes: 1 * GiB, controlRuntimeS: 10, memoryFullBytes: 1024 * GiB, memoryFullSnapshots: 100 },
  full: { imageBytes: 1 * GiB, runtimeS: 5, reps: 3, cache: ['hot', 'cold'], writtenBytes: 8 * GiB, snapshotCount: 100, stallRuntimeS: 20, memorySnapshots: 100, spaceSettleMs: 10_000,
    controlSnapshots: 500, controlWrittenBytes: 8 * GiB, controlRuntimeS: 20, memoryFullBytes: 1024 * GiB, memoryFullSnapshots: 100 },
};

export type Client = 'fio' | 'nbdcopy-in' | 'nbdcopy-out';

export interface Workload {
  name: string;
  client: Client;
  /** fio options (without ioengine/uri/runtime). */
  fio?: Record<string, string | number>;
  writes: boolean;
  /** Only these peers (default: all). */
  peers?: readonly PeerName[];
  /** snapnbd snapshot workloads: prefill the whole volume, then take this many snapshots. */
  prefillThenSnapshots?: number;
  /** Which number the ratio compares: IOPS for small blocks, MB/s for streaming. */
  primary: 'iops' | 'mbps';
  /** fio through the `nbdkit nbd` bridge, over TLS to the server or in clear (bench/lib/tls.ts). */
  via?: Via;
}

/**
 * The peers of the TLS rows, all with TLS required and client certificates (or the PSK):
 * nbdkit-file is the speed reference, nbdkit-cow the copy-on-write server like ours (its writes
 * into fresh space cost what ours do, so its row shows what TLS alone costs each server).
 */
const TLS_PEERS = ['snapnbd', 'nbdkit-file', 'nbdkit-cow'] as const;

export const WORKLOADS: readonly Workload[] = [
  { name: 'seqread-1m', client: 'fio', fio: { rw: 'read', bs: '1M', iodepth: 8 }, writes: false, primary: 'mbps' },
  { name: 'seqwrite-1m', client: 'fio', fio: { rw: 'write', bs: '1M', iodepth: 8 }, writes: true, primary: 'mbps' },
  { name: 'randread-4k', client: 'fio', fio: { rw: 'randread', bs: '4k', iodepth: 32 }, writes: false, primary: 'iops' },
  { name: 'randwrite-4k', client: 'fio', fio: { rw: 'randwrite', bs: '4k', iodepth: 32 }, writes: true, primary: 'iops' },
  { name: 'randrw70-4k', client: 'fio', fio: { rw: 'randrw', rwmixread: 70, bs: '4k', iodepth: 32 }, writes: true, primary: 'iops' },
  { name: 'mc4-randread-4k', client: 'fio', fio: { rw: 'randread', bs: '4k', iodepth: 8, numjobs: 4 }, writes: false, primary: 'iops' },
  { name: 'mc4-randwrite-4k', client: 'fio', fio: { rw: 'randwrite', bs: '4k', iodepth: 8, numjobs: 4 }, writes: true, primary: 'iops' },
  { name: 'nbdcopy-in', client: 'nbdcopy-in', writes: true, primary: 'mbps' },
  { name: 'nbdcopy-out', client: 'nbdcopy-out', writes: false, primary: 'mbps' },
  // The cost of copy-on-write after snapshots: the volume is first written whole (so the head
  // owns every chunk and overwrites in place), then N snapshots are taken, then 4 KiB random
  // writes. snap0 is the baseline the target compares against (>= 0.8x).
  { name: 'randwrite-4k-snap0', client: 'fio', fio: { rw: 'randwrite', bs: '4k', iodepth: 32 }, writes: true, peers: ['snapnbd'], prefillThenSnapshots: 0, primary: 'iops' },
  { name: 'randwrite-4k-snap1', client: 'fio', fio: { rw: 'randwrite', bs: '4k', iodepth: 32 }, writes: true, peers: ['snapnbd'], prefillThenSnapshots: 1, primary: 'iops' },
  { name: 'randwrite-4k-snap100', client: 'fio', fio: { rw: 'randwrite', bs: '4k', iodepth: 32 }, writes: true, peers: ['snapnbd'], prefillThenSnapshots: 100, primary: 'iops' },
  // TLS (issue 14): fio -> nbdkit nbd bridge -> TLS -> server, with certificates (tls-*) or a
  // pre-shared key (psk-*); bridge-*: the same path in clear.
  ...(['tls', 'psk', 'bridge'] as const).flatMap((via) => [
    { name: `${via}-seqread-1m`, client: 'fio', fio: { rw: 'read', bs: '1M', iodepth: 8 }, writes: false, primary: 'mbps', via, peers: TLS_PEERS },
    { name: `${via}-seqwrite-1m`, client: 'fio', fio: { rw: 'write', bs: '1M', iodepth: 8 }, writes: true, primary: 'mbps', via, peers: TLS_PEERS },
    { name: `${via}-randread-4k`, client: 'fio', fio: { rw: 'randread', bs: '4k', iodepth: 32 }, writes: false, primary: 'iops', via, peers: TLS_PEERS },
    { name: `${via}-randwrite-4k`, client: 'fio', fio: { rw: 'randwrite', bs: '4k', iodepth: 32 }, writes: true, primary: 'iops', via, peers: TLS_PEERS },
  ] satisfies Workload[]),
];

/** snapnbd-only scenarios (snapshot costs, stalls, space, memory). */
export const SCENARIOS = ['snapshot-create', 'write-stall', 'snapshot-delete', 'memory', 'control-plane', 'memory-full'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export interface Options {
  mode: Mode;
  settings: ModeSettings;
  peers: PeerName[];
  workloads: Workload[];
  scenarios: ScenarioName[];
  out: string | null;
  /** Extra environment for the snapnbd process (e.g. UV_THREADPOOL_SIZE=1). */
  snapnbdEnv: Record<string, string>;
  /** Write a V8 CPU profile of each snapnbd run into this directory. */
  cpuProfDir: string | null;
  /** Preload bench/lib/loop-watch.mjs into snapnbd, its records into this directory. */
  loopWatchDir: string | null;
  /** Sample the kernel stacks of snapnbd's blocked threads (bench/lib/kernel-stacks.mjs) into this directory. */
  kernelStacksDir: string | null;
  snapnbdBin: string | null;
  /** `--compare`: another build's entry point, run as peer snapnbd-base beside this one. */
  compareBin: string | null;
  tmpBase: string | null;
  keep: boolean;
  /** `--no-recycle`: skip machine.ts recycleFreeMemory before write runs (to see its effect). */
  noRecycle: boolean;
  verbose: boolean;
}

export const USAGE = `usage: npm run bench -- [--smoke | --quick] [options]
  --smoke              ~1 s per workload, 1 repetition, small sizes (CI; no speed claims)
  --quick              1 GiB image, 5 s runs, 1 repetition, hot cache only
  (default: full)      1 GiB image, 5 s runs, 3 repetitions, hot and cold cache
  --reps N             repetitions (median reported)
  --runtime S          seconds per fio run
  --memory-full-snapshots N   snapshots of the memory-full scenario (issue 15: snapshot.list
                       of 500 at 1 TiB fully written; default 100, the RSS row's)
  --cache hot,cold     page-cache regimes (cold drops caches before each run; needs root)
  --only P,...         peers: ${PEERS.join(',')}
  --workloads W,...    workloads and scenarios by name, or prefix ending in '*':
                       ${WORKLOADS.map((w) => w.name).join(',')}
                       ${SCENARIOS.join(',')}  (or 'none')
  --env K=V            environment for snapnbd (repeatable), e.g. --env UV_THREADPOOL_SIZE=1
  --cpu-prof DIR       run snapnbd under node --cpu-prof, profiles into DIR
  --loop-watch DIR     record in snapnbd what held its event loop (late turns, GC pauses, slow
                       synchronous fs calls; bench/lib/loop-watch.mjs); control-plane attributes them
  --kernel-stacks DIR  sample where snapnbd's threads wait in the kernel (state D, their stacks: root;
                       bench/lib/kernel-stacks.mjs); write-stall and control-plane sum them per phase
  --snapnbd-bin PATH   another snapnbd entry point (e.g. another checkout's bin/snapnbd)
  --compare PATH       also run that build (peer ${BASE_PEER}) wherever snapnbd runs, interleaved
                       in the same repetitions; the ratio snapnbd / ${BASE_PEER} is this build's
                       speed-up (e.g. --compare ../old/bin/snapnbd --only snapnbd)
  --out FILE           JSON result path (default bench/results/<date>-<mode>.json)
  --tmp DIR            where the image and data dirs go (default os.tmpdir())
  --keep               keep the temporary directory
  --no-recycle         do not free a scratch file's pages right before each write run (bench/lib/
                       machine.ts recycleFreeMemory; only to measure what it changes)
  --verbose            progress details on stderr
`;

export function parseOptions(argv: string[]): Options | 'help' {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      smoke: { type: 'boolean' },
      quick: { type: 'boolean' },
      full: { type: 'boolean' },
      reps: { type: 'string' },
      runtime: { type: 'string' },
      'memory-full-snapshots': { type: 'string' },
      cache: { type: 'string' },
      only: { type: 'string' },
      workloads: { type: 'string' },
      env: { type: 'string', multiple: true },
      'cpu-prof': { type: 'string' },
      'loop-watch': { type: 'string' },
      'kernel-stacks': { type: 'string' },
      'snapnbd-bin': { type: 'string' },
      compare: { type: 'string' },
      out: { type: 'string' },
      tmp: { type: 'string' },
      keep: { type: 'boolean' },
      'no-recycle': { type: 'boolean' },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) return 'help';
  const mode: Mode = v.smoke ? 'smoke' : v.quick ? 'quick' : 'full';
  const settings = { ...MODE_SETTINGS[mode] };
  if (v.reps !== undefined) settings.reps = positiveInt('--reps', v.reps);
  if (v.runtime !== undefined) settings.runtimeS = positiveInt('--runtime', v.runtime);
  if (v['memory-full-snapshots'] !== undefined) settings.memoryFullSnapshots = positiveInt('--memory-full-snapshots', v['memory-full-snapshots']);
  if (v.cache !== undefined) {
    settings.cache = v.cache.split(',').map((c) => {
      if (!(CACHE_MODES as readonly string[]).includes(c)) throw new Error(`--cache: '${c}' is not hot or cold`);
      return c as CacheMode;
    });
  }
  const peers = v.only === undefined ? [...PEERS] : v.only.split(',').map((p) => {
    if (!(PEERS as readonly string[]).includes(p)) throw new Error(`--only: unknown peer '${p}' (${PEERS.join(', ')})`);
    return p as PeerName;
  });
  let workloads = [...WORKLOADS];
  let scenarios: ScenarioName[] = [...SCENARIOS];
  if (v.workloads !== undefined) {
    const wanted = v.workloads === 'none' ? [] : v.workloads.split(',');
    // Exact names, or a prefix ending in '*' (e.g. 'randwrite-4k-snap*', 'snapshot-*').
    const one = (w: string, name: string): boolean => (w.endsWith('*') ? name.startsWith(w.slice(0, -1)) : name === w);
    const matches = (name: string): boolean => wanted.some((w) => one(w, name));
    for (const w of wanted) {
      if (!WORKLOADS.some((x) => one(w, x.name)) && !SCENARIOS.some((s) => one(w, s))) {
        throw new Error(`--workloads: '${w}' matches no workload or scenario`);
      }
    }
    workloads = workloads.filter((w) => matches(w.name));
    scenarios = scenarios.filter((s) => matches(s));
  }
  const snapnbdEnv: Record<string, string> = {};
  for (const kv of v.env ?? []) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new Error(`--env: '${kv}' is not K=V`);
    snapnbdEnv[m[1]!] = m[2]!;
  }
  return {
    mode, settings, peers, workloads, scenarios, snapnbdEnv,
    out: v.out ?? null,
    cpuProfDir: v['cpu-prof'] ?? null,
    loopWatchDir: v['loop-watch'] ?? null,
    kernelStacksDir: v['kernel-stacks'] ?? null,
    snapnbdBin: v['snapnbd-bin'] ?? null,
    compareBin: v.compare ?? null,
    tmpBase: v.tmp ?? null,
    keep: v.keep ?? false,
    noRecycle: v['no-recycle'] ?? false,
    verbose: v.verbose ?? false,
  };
}

function positiveInt(flag: string, s: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${flag}: '${s}' is not a positive whole number`);
  return n;
}
