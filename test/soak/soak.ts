// The soak: `npm run soak -- --minutes N` (CI runs a 2-minute smoke, test/integration/soak-smoke.test.ts).
// One server; fio with --verify=crc32c on two volumes over two connections each, in rounds; on a
// third volume a writer of stamped blocks whose every answered state is modelled, with a snapshot
// every few seconds, rollbacks, clones (checked and deleted), snapshot deletes and diffs (checked
// against the model); the background compactor runs on its own; every few minutes a kill -9 and a
// restart, after which every volume, snapshot and clone must read exactly as modelled. At the end
// the same verification, `snapnbd check`, and the server's RSS over time. Prints one JSON line
// `soak: {...}`; exits 1 on any error.
import { execFile } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { ControlClient } from '../../src/control/client.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { Prng, testSeed } from '../helpers/prng.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const MiB = 2 ** 20;
const BLOCK = 4096;
const MODEL_BLOCKS = 2048; // 8 MiB
const SNAPSHOT_EVERY_MS = 3000;
const KILL_EVERY_MS = Number(process.env['SOAK_KILL_EVERY_MS'] ?? 120_000);
const RSS_EVERY_MS = 5000;
const FIO_VOLUMES = ['f0', 'f1'];
const FIO_REGION = 16 * MiB;

const argv = process.argv.slice(2);
const minutes = Number(argv[argv.indexOf('--minutes') + 1] ?? 2);
if (!(minutes > 0)) throw new Error('usage: npm run soak -- --minutes N');
const seed = testSeed();
const rng = new Prng(seed);
const endAt = Date.now() + minutes * 60_000;
const errors: string[] = [];
const counts = { fioRuns: 0, fioInterrupted: 0, writes: 0, flushes: 0, snapshots: 0, rollbacks: 0, clones: 0, deletes: 0, diffs: 0, kills: 0, verifications: 0 };
const rss: { t: number; mib: number }[] = [];
const t0 = Date.now();

function blockContent(block: number, c: number): Buffer {
  const b = Buffer.alloc(BLOCK, (c * 31 + block) & 0xff);
  b.writeUInt32LE(block, 0);
  b.writeUInt32LE(c, 4);
  return b;
}
const contentOf = (counters: Int32Array): Buffer => {
  const b = Buffer.alloc(MODEL_BLOCKS * BLOCK);
  for (let i = 0; i < MODEL_BLOCKS; i++) if (counters[i]) blockContent(i, counters[i]!).copy(b, i * BLOCK);
  return b;
};

const dataDir = tempDir('snapnbd-soak-');
const args = ['--volume', 'f0=64M', '--volume', 'f1=64M', '--volume', `m=${(MODEL_BLOCKS * BLOCK) / MiB}M`];
let server: RunningServer = await startServer({ dataDir, args });
let ctl = await ControlClient.connect(server.controlPath);
let generation = 0; // bumped at each kill and restart: fio runs spanning one are interrupted, not failed
let restarted: Promise<void> | null = null; // while the server restarts, fio waits

async function fioLoop(vol: string): Promise<void> {
  while (Date.now() < endAt) {
    if (restarted) await restarted;
    const gen = generation;
    const r = await run('fio', [
      `--name=${vol}`, '--ioengine=nbd', `--uri=${server.uri(vol)}`, '--rw=randwrite', '--bsrange=4k-256k',
      '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--iodepth=8', `--size=${FIO_REGION}`,
      '--numjobs=2', `--offset_increment=${FIO_REGION}`, `--randseed=${rng.u32()}`, '--group_reporting',
    ]).then(() => null, (e: { stderr?: string; stdout?: string }) => e);
    if (r === null) counts.fioRuns++;
    else if (generation !== gen) counts.fioInterrupted++;
    else errors.push(`fio on ${vol}: ${(r.stderr ?? '').slice(0, 500)} ${(r.stdout ?? '').slice(-500)}`);
  }
}

// The model of volume m: its head, its snapshots, its clones (each a frozen copy of a snapshot).
let head = new Int32Array(MODEL_BLOCKS);
const snaps = new Map<string, Int32Array>();
const clones = new Map<string, Int32Array>();
let counter = 0;
let names = 0;

async function readAll(name: string): Promise<Buffer> {
  const c = await NbdTestClient.connect(server.port, name);
  try {
    return await c.read(0, MODEL_BLOCKS * BLOCK);
  } finally {
    await c.disconnect();
  }
}

async function verifyModel(when: string): Promise<void> {
  counts.verifications++;
  const check = async (name: string, want: Int32Array): Promise<void> => {
    if (!(await readAll(name)).equals(contentOf(want))) errors.push(`${when}: ${name} differs from what was answered`);
  };
  await check('m', head);
  const listed = (await ctl.call<{ snapshots: { name: string }[] }>('snapshot.list', { volume: 'm' })).snapshots.map((s) => s.name).sort();
  if (listed.join() !== [...snaps.keys()].sort().join()) errors.push(`${when}: snapshots ${listed.join()} != ${[...snaps.keys()].sort().join()}`);
  for (const [s, want] of snaps) await check(`m@${s}`, want);
  for (const [c, want] of clones) await check(c, want);
}

async function modelLoop(): Promise<void> {
  let dev = await NbdTestClient.connect(server.port, 'm');
  let nextSnap = Date.now() + SNAPSHOT_EVERY_MS;
  let nextKill = Date.now() + KILL_EVERY_MS;
  while (Date.now() < endAt) {
    const batch: Promise<void>[] = [];
    const used = new Set<number>();
    for (let i = 0; i < 16; i++) {
      const b = rng.int(0, MODEL_BLOCKS - 1);
      if (used.has(b)) continue;
      used.add(b);
      const c = ++counter;
      head[b] = c;
      batch.push(dev.write(b * BLOCK, blockContent(b, c)));
    }
    await Promise.all(batch);
    counts.writes += used.size;
    if (rng.bool(0.3)) {
      await dev.flush();
      counts.flushes++;
    }
    if (Date.now() < nextSnap) continue;
    nextSnap = Date.now() + SNAPSHOT_EVERY_MS;
    // Control operations: the model is exact (every answered write is in it).
    const sn = `s${names++}`;
    await ctl.call('snapshot.create', { volume: 'm', name: sn });
    snaps.set(sn, head.slice());
    counts.snapshots++;
    const all = [...snaps.keys()];
    if (all.length >= 2) {
      // A diff between two snapshots covers every block that differs.
      const [a, b] = [rng.pick(all), rng.pick(all)];
      const ext: { offset: number; length: number }[] = [];
      let cursor: string | null = null;
      do {
        const page: { extents: { offset: number; length: number }[]; next: string | null } =
          await ctl.call('snapshot.diff', { volume: 'm', from: a, to: b, ...(cursor ? { cursor } : {}) });
        ext.push(...page.extents);
        cursor = page.next;
      } while (cursor);
      const sa = snaps.get(a)!;
      const sb = snaps.get(b)!;
      for (let i = 0; i < MODEL_BLOCKS; i++) {
        if (sa[i] !== sb[i] && !ext.some((e) => e.offset <= i * BLOCK && i * BLOCK < e.offset + e.length)) errors.push(`diff ${a}..${b} misses block ${i}`);
      }
      counts.diffs++;
    }
    if (all.length > 6) {
      const victim = all[0]!;
      await ctl.call('snapshot.delete', { volume: 'm', name: victim });
      snaps.delete(victim);
      counts.deletes++;
    }
    if (rng.bool(0.2)) {
      const from = rng.pick([...snaps.keys()]);
      const cn = `c${names++}`;
      await ctl.call('volume.clone', { volume: 'm', snapshot: from, name: cn });
      clones.set(cn, snaps.get(from)!.slice());
      counts.clones++;
      if (clones.size > 2) {
        const old = [...clones.keys()][0]!;
        if (!(await readAll(old)).equals(contentOf(clones.get(old)!))) errors.push(`clone ${old} differs`);
        await ctl.call('volume.delete', { name: old });
        clones.delete(old);
      }
    }
    if (rng.bool(0.15)) {
      const to = rng.pick([...snaps.keys()]);
      await dev.disconnect();
      await ctl.call('snapshot.rollback', { volume: 'm', name: to, force: true });
      head = snaps.get(to)!.slice();
      counts.rollbacks++;
      dev = await NbdTestClient.connect(server.port, 'm');
    }
    if (Date.now() >= nextKill) {
      nextKill = Date.now() + KILL_EVERY_MS;
      await dev.flush(); // all of the model answered and durable: the restart must show exactly it
      dev.destroy();
      generation++;
      let done!: () => void;
      restarted = new Promise((r) => { done = r; });
      await server.kill();
      ctl.close();
      counts.kills++;
      server = await startServer({ dataDir, args });
      ctl = await ControlClient.connect(server.controlPath);
      generation++;
      restarted = null;
      done();
      await verifyModel(`after kill -9 #${counts.kills}`);
      dev = await NbdTestClient.connect(server.port, 'm');
    }
  }
  await dev.flush();
  await dev.disconnect();
}

const sampler = setInterval(() => {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.proc.pid}/status`, 'utf8'));
    if (m) rss.push({ t: Math.round((Date.now() - t0) / 1000), mib: Math.round(Number(m[1]) / 1024) });
  } catch { /* between a kill and the restart */ }
}, RSS_EVERY_MS);

try {
  await Promise.all([modelLoop(), ...FIO_VOLUMES.map((v) => fioLoop(v))]);
  await verifyModel('at the end');
} catch (e) {
  errors.push(`soak stopped: ${(e as Error).stack ?? String(e)}`);
} finally {
  clearInterval(sampler);
  ctl.close();
  const code = await server.stop();
  if (code !== 0) errors.push(`server exit ${code}`);
}
const chk = await run(SNAPNBD_BIN, ['check', '--data-dir', dataDir]).then((r) => r.stdout + r.stderr, (e: { stdout: string; stderr: string }) => {
  errors.push(`snapnbd check: ${e.stdout}${e.stderr}`);
  return '';
});
rmSync(dataDir, { recursive: true, force: true });
console.log(`soak: ${JSON.stringify({ seed, minutes, ...counts, errors: errors.length, check: chk.trim().split('\n').at(-1), rssMiB: rss.map((r) => `${r.t}s:${r.mib}`).join(' ') })}`);
for (const e of errors.slice(0, 20)) console.error(`soak error: ${e}`);
process.exit(errors.length > 0 ? 1 : 0);
