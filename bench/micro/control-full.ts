// The control plane on a fully written volume with many snapshots (issue 15: "snapshot.list of
// 500 snapshots answers in under 50 ms at any volume size, 1 TiB fully written included"), in
// process: how long each control step keeps the event loop in one turn, which is what every NBD
// request waits behind. The store is the memory-full scenario's (bench/fill-store.ts: every chunk
// of VOLUME mapped, no data written), opened here; SNAPSHOTS snapshots are taken, each after
// REWRITE random 64 KiB writes through the head; then each step runs ROUNDS times while a
// re-queued setImmediate measures the longest turn (the loop-turn counting of the tests):
//   - snapshot.list as the control socket answers it (registry page, reply JSON), default page
//     and a page of LIST_PAGE_MAX, and the store's listSnapshots alone;
//   - a checkpoint (CheckpointPlan marks every L1 and page of every node frozen);
//   - a compaction pass after DELETES old snapshots were deleted (the switch: remapEntries over
//     every distinct page of the class);
//   - a snapshot delete (sliced, node-release.ts).
// Wall-clock figures on a loaded machine are stretched by other processes; the longest turn and
// the CPU time per step are what the code costs.
// Run: node --import tsx bench/micro/control-full.ts [--gib 1024] [--snapshots 500] [--rounds 5] [--dir DIR]
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openCowStore } from '../../src/storage/index.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { callMethod, LIST_PAGE_MAX, type ControlContext } from '../../src/control/methods.ts';
import { stringifySliced } from '../../src/control/json-sliced.ts';

const CHUNK = 65536;
const REWRITE = 8;
const DELETES = 20;
const { values } = parseArgs({
  options: { gib: { type: 'string' }, snapshots: { type: 'string' }, rounds: { type: 'string' }, dir: { type: 'string' }, help: { type: 'boolean' } },
});
if (values.help) {
  console.log('usage: node --import tsx bench/micro/control-full.ts [--gib 1024] [--snapshots 500] [--rounds 5] [--dir DIR]');
  process.exit(0);
}
const GIB = Number(values.gib ?? 1024);
const SNAPSHOTS = Number(values.snapshots ?? 500);
const ROUNDS = Number(values.rounds ?? 5);

const now = (): number => performance.now();

interface Turns { wallMs: number; cpuMs: number; turnMs: number; turnCpuMs: number; turns: number }

/**
 * The longest turn of the event loop while `fn` runs: gaps between runs of a re-queued
 * setImmediate, in wall-clock time and in the process's CPU time (the wall gap of a loaded
 * machine includes time the process waited for a core; the CPU gap is what the turn cost).
 */
async function longestTurn(fn: () => Promise<unknown>): Promise<Turns> {
  let last = now();
  let lastCpu = process.cpuUsage();
  let max = 0;
  let maxCpu = 0;
  let turns = 0;
  let running = true;
  const tick = (): void => {
    const t = now();
    const c = process.cpuUsage(lastCpu);
    lastCpu = process.cpuUsage();
    maxCpu = Math.max(maxCpu, (c.user + c.system) / 1000);
    max = Math.max(max, t - last);
    last = t;
    turns++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  const c0 = process.cpuUsage();
  const t0 = now();
  await fn();
  const wallMs = now() - t0;
  const c = process.cpuUsage(c0);
  running = false;
  await new Promise((r) => setImmediate(r));
  const cl = process.cpuUsage(lastCpu);
  return { wallMs, cpuMs: (c.user + c.system) / 1000, turnMs: Math.max(max, now() - last), turnCpuMs: Math.max(maxCpu, (cl.user + cl.system) / 1000), turns };
}

function summary(label: string, xs: Turns[]): string {
  type K = 'wallMs' | 'cpuMs' | 'turnMs' | 'turnCpuMs';
  const med = (k: K): number => [...xs.map((x) => x[k])].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const max = (k: K): number => Math.max(...xs.map((x) => x[k]));
  const f = (k: K): string => `median ${med(k).toFixed(1)} ms (max ${max(k).toFixed(1)})`;
  return `  ${label}: wall ${f('wallMs')}, CPU ${f('cpuMs')}; longest turn: wall ${f('turnMs')}, CPU ${f('turnCpuMs')}; turns ${Math.max(...xs.map((x) => x.turns))}`;
}

async function main(): Promise<void> {
  const root = values.dir ?? await mkdtemp(join(tmpdir(), 'snapnbd-cf-'));
  const dir = join(root, 's');
  try {
    const size = GIB * 2 ** 30;
    const t0 = now();
    execFileSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'fill-store.ts'), dir, String(size), 'v'], { stdio: 'inherit' });
    const store = await openCowStore(dir, { commitIntervalMs: 0 });
    store.autoCompact = false;
    console.log(`${GIB} GiB fully mapped: filled and opened in ${((now() - t0) / 1000).toFixed(1)} s`);
    const chunks = size / CHUNK;
    const dev = store.head('v');
    const buf = Buffer.alloc(CHUNK, 0x5a);
    let seed = 1;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    const t1 = now();
    const built = await longestTurn(async () => {
      for (let i = 0; i < SNAPSHOTS; i++) {
        for (let k = 0; k < REWRITE; k++) await dev.write(Math.floor(rand() * chunks) * CHUNK, buf, { fua: false });
        await store.createSnapshot('v', `p${i}`);
      }
    });
    console.log(`${SNAPSHOTS} snapshots (${REWRITE} random 64 KiB writes before each) in ${((now() - t1) / 1000).toFixed(1)} s; RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
    console.log(summary('taking them (writes and creates)', [built]));
    const ctl: ControlContext = { registry: new VolumeRegistry(store, { defaultExport: 'v', readOnly: false }), serverInfo: () => ({ version: '', listeners: [], startedAt: new Date() }) };
    const rows = new Map<string, Awaited<ReturnType<typeof longestTurn>>[]>();
    const step = async (label: string, fn: () => Promise<unknown>): Promise<void> => {
      rows.set(label, [...rows.get(label) ?? [], await longestTurn(fn)]);
    };
    for (let r = 0; r < ROUNDS; r++) {
      await step('store.listSnapshots', async () => store.listSnapshots('v'));
      await step('snapshot.list reply (default page)', async () => stringifySliced(await callMethod('snapshot.list', { volume: 'v' }, ctl)));
      await step(`snapshot.list reply (limit ${LIST_PAGE_MAX})`, async () => stringifySliced(await callMethod('snapshot.list', { volume: 'v', limit: LIST_PAGE_MAX }, ctl)));
      await step('volume.info reply', async () => stringifySliced(await callMethod('volume.info', { name: 'v' }, ctl)));
      await step('checkpoint', () => store.checkpoint());
    }
    for (let i = 0; i < DELETES; i++) await step('snapshot.delete', () => ctl.registry.deleteSnapshot('v', `p${i}`));
    await store.commit();
    await step('compact (pass after the deletes)', () => store.compact());
    for (const [label, xs] of rows) console.log(summary(label, xs));
    await store.close();
  } finally {
    if (!values.dir) await rm(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
