// The control plane's own cost, in process (bench/README.md "control-plane"): how long each
// control operation keeps the event loop, independent of how busy the machine is with others.
// A volume of VOLUME_GIB with every chunk mapped (engine level, as bench/fill-store.ts), then
// SNAPSHOTS snapshots each after REWRITE chunks rewritten through the head device; then rounds of
// listSnapshots, volumeInfo, stats, diff (oldest snapshot to head, first page), create + delete of
// an old snapshot and a compaction pass, while a 1 ms timer measures the longest event-loop delay;
// the four reads also as the control socket answers them (the method over a VolumeRegistry, then
// the reply's JSON text: the `*Reply` rows).
// Then two rows of issue 15's open items on a second volume of VOLUME_GIB, fully mapped:
//   - big delete: a snapshot whose pages are its own (the head trimmed whole) deleted; the walk
//     that frees its slots runs in slices (node-release.ts): its duration, yields, loop delay;
//   - write stall: QD 32 random 4 KiB writes for STALL_SECONDS with a snapshot every second; the
//     longest write across a snapshot.create against the longest away from one.
// Run: node --import tsx bench/micro/control-plane.ts [--gib 8] [--snapshots 500] [--rounds 20] [--stall-seconds 5]
import { mkdtemp, rm } from 'node:fs/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openCowStore } from '../../src/storage/index.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { callMethod, type ControlContext, type MethodName } from '../../src/control/methods.ts';

const CHUNK = 65536;
const REWRITE = 64;
const { values } = parseArgs({
  options: { gib: { type: 'string' }, snapshots: { type: 'string' }, rounds: { type: 'string' }, 'stall-seconds': { type: 'string' }, help: { type: 'boolean' } },
});
if (values.help) {
  console.log('usage: node --import tsx bench/micro/control-plane.ts [--gib 8] [--snapshots 500] [--rounds 20] [--stall-seconds 5]');
  process.exit(0);
}
const GIB = Number(values.gib ?? 8);
const STALL_SECONDS = Number(values['stall-seconds'] ?? 5);
const QUEUE_DEPTH = 32;
const BLOCK = 4096;
const SNAPSHOTS = Number(values.snapshots ?? 500);
const ROUNDS = Number(values.rounds ?? 20);

const now = (): number => performance.now();
function summary(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${s[Math.floor(s.length / 2)]!.toFixed(2)} ms, max ${s[s.length - 1]!.toFixed(2)} ms`;
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'snapnbd-cp-'));
  try {
    const s = await openCowStore(join(root, 's'), { commitIntervalMs: 0 });
    s.autoCompact = false;
    const size = GIB * 2 ** 30;
    await s.createVolume({ name: 'v', size, chunkSize: CHUNK });
    const chunks = size / CHUNK;
    const st = s.inspect();
    const cls = st.chunkClass(CHUNK);
    const head = st.volume('v')!.head;
    for (let c = 0; c < chunks; c++) head.map.set(c, cls.alloc(), 1);
    // The big-delete and write-stall volume, alike.
    await s.createVolume({ name: 'w', size, chunkSize: CHUNK });
    const wMap = st.volume('w')!.head.map;
    for (let c = 0; c < chunks; c++) wMap.set(c, cls.alloc(), 1);
    await s.checkpoint();
    await s.close();
    const store = await openCowStore(join(root, 's'), { commitIntervalMs: 0 }); // counters rebuilt from the maps
    store.autoCompact = false;
    const dev = store.head('v');
    const buf = Buffer.alloc(CHUNK, 0x5a);
    let seed = 1;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < SNAPSHOTS; i++) {
      for (let k = 0; k < REWRITE; k++) await dev.write(Math.floor(rand() * chunks) * CHUNK, buf, { fua: false });
      await store.createSnapshot('v', `p${i}`);
    }
    const t = {
      list: [] as number[], info: [] as number[], stats: [] as number[], diff: [] as number[], create: [] as number[], del: [] as number[], compact: [] as number[], writes: [] as number[],
      listReply: [] as number[], infoReply: [] as number[], statsReply: [] as number[], diffReply: [] as number[],
    };
    // The control methods as the socket runs them: registry views, then the reply's JSON text.
    const ctl: ControlContext = { registry: new VolumeRegistry(store, { defaultExport: 'v', readOnly: false }), serverInfo: () => ({ version: '', listeners: [], startedAt: new Date() }) };
    const reply = async (m: MethodName, params: Record<string, unknown>): Promise<number> => JSON.stringify(await callMethod(m, params, ctl)).length;
    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    // Longest event-loop delay seen while each kind of operation ran (the loop is reset before each).
    const blocked = new Map<string, number>();
    // CPU time of the process per operation: what the loop would be held on an idle machine
    // (another session's load stretches wall-clock figures, much less CPU time).
    const cpu = new Map<string, number[]>();
    const op = async (kind: keyof typeof t, fn: () => unknown): Promise<void> => {
      loop.reset();
      const t0 = now();
      const c0 = process.cpuUsage();
      await fn();
      const c = process.cpuUsage(c0);
      t[kind].push(now() - t0);
      cpu.set(kind, [...cpu.get(kind) ?? [], (c.user + c.system) / 1000]);
      await new Promise((r) => setTimeout(r, 2)); // let the monitor sample after the operation
      blocked.set(kind, Math.max(blocked.get(kind) ?? 0, loop.count > 0 ? loop.max / 1e6 : 0));
    };
    for (let r = 0; r < ROUNDS; r++) {
      await op('list', () => store.listSnapshots('v'));
      await op('info', () => store.volumeInfo('v'));
      await op('stats', () => store.stats());
      await op('diff', () => store.diff('v', 'p0', null, { limit: 1024 }));
      await op('listReply', () => reply('snapshot.list', { volume: 'v' }));
      await op('infoReply', () => reply('volume.info', { name: 'v' }));
      await op('statsReply', () => reply('server.stats', {}));
      await op('diffReply', () => reply('snapshot.diff', { volume: 'v', from: 'p0' }));
      // Through the registry, which keeps its export catalog (the replies' names) in step.
      await op('create', () => ctl.registry.createSnapshot('v', `loop${r}`, undefined));
      await op('del', () => ctl.registry.deleteSnapshot('v', `p${r + 1}`));
      await op('compact', () => store.compact());
      await op('writes', async () => {
        for (let k = 0; k < REWRITE; k++) await dev.write(Math.floor(rand() * chunks) * CHUNK, buf, { fua: false });
      });
    }
    loop.disable();
    console.log(`${GIB} GiB fully mapped (${chunks} chunks), ${SNAPSHOTS} snapshots, ${ROUNDS} rounds:`);
    console.log(`  listSnapshots (${store.listSnapshots('v').length}): ${summary(t.list)}`);
    console.log(`  volumeInfo: ${summary(t.info)}; stats: ${summary(t.stats)}`);
    console.log(`  diff first page: ${summary(t.diff)}`);
    console.log(`  create: ${summary(t.create)}; delete: ${summary(t.del)} (both with their commit's fdatasyncs)`);
    console.log(`  compact: ${summary(t.compact)}`);
    console.log(`  control replies (method + JSON text): snapshot.list ${summary(t.listReply)}; volume.info ${summary(t.infoReply)}; server.stats ${summary(t.statsReply)}; snapshot.diff ${summary(t.diffReply)}`);
    const mid = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    console.log(`  CPU ms per operation, median (min): ${[...cpu].map(([k, v]) => `${k} ${mid(v).toFixed(2)} (${Math.min(...v).toFixed(2)})`).join(', ')}`);
    console.log(`  longest event-loop delay while each ran: ${[...blocked].map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(', ')}`);

    // Big delete: a snapshot holding every page alone.
    await store.createSnapshot('w', 'big');
    await store.head('w').trim(0, size, { fua: false });
    await store.commit();
    // The longest gap between two runs of a 1 ms timer: how long the delete kept the loop at once.
    let ticks = 0;
    let last = now();
    let gap = 0;
    const ticker = setInterval(() => {
      const t = now();
      gap = Math.max(gap, t - last);
      last = t;
      ticks++;
    }, 1);
    loop.enable();
    const d0 = now();
    last = d0;
    await store.deleteSnapshot('w', 'big');
    const delMs = now() - d0;
    await new Promise((r) => setTimeout(r, 2));
    clearInterval(ticker);
    console.log(`  big delete (${chunks} slots freed): ${delMs.toFixed(1)} ms, a 1 ms timer ran ${ticks} times meanwhile, longest gap ${gap.toFixed(1)} ms`);

    // Write stall: QD 32 random 4 KiB writes, a snapshot every second.
    const wdev = store.head('w');
    const blocks = size / BLOCK;
    const data = Buffer.alloc(BLOCK, 0x33);
    const lat: { t0: number; t1: number }[] = [];
    const creates: { t0: number; t1: number }[] = [];
    let stop = false;
    const worker = async (): Promise<void> => {
      while (!stop) {
        const t0 = now();
        await wdev.write(Math.floor(rand() * blocks) * BLOCK, data, { fua: false });
        lat.push({ t0, t1: now() });
        // The next request arrives as an event (over NBD: a socket read), not in the same microtask run.
        await new Promise((r) => setImmediate(r));
      }
    };
    const workers = Array.from({ length: QUEUE_DEPTH }, worker);
    loop.reset();
    for (let i = 0; i < STALL_SECONDS; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const t0 = now();
      await store.createSnapshot('w', `st${i}`);
      creates.push({ t0, t1: now() });
    }
    stop = true;
    await Promise.all(workers);
    const across = (l: { t0: number; t1: number }): boolean => creates.some((c) => l.t0 < c.t1 && l.t1 > c.t0);
    const ms = (l: { t0: number; t1: number }): number => l.t1 - l.t0;
    const spanning = lat.filter(across).map(ms);
    const quiet = lat.filter((l) => !across(l)).map(ms);
    console.log(`  write stall (QD ${QUEUE_DEPTH} 4 KiB random writes, ${lat.length} in ${STALL_SECONDS} s, ${creates.length} snapshots): ` +
      `across a create ${spanning.length ? summary(spanning) : 'none'}; away ${summary(quiet)}; create ${summary(creates.map(ms))}; longest event-loop delay ${(loop.max / 1e6).toFixed(1)} ms`);
    loop.disable();
    await store.close();
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
