// Where does a random 4 KiB write's server CPU go: the first write into a chunk, or any write?
// One server over a raw image (the image as the volume's read-only backing, as in bench/run.ts),
// then passes of the same number of random 4 KiB writes, each measured on its own (server CPU
// per GiB the client wrote): the low half of the volume (first time, then again), the high half
// (first time on a warmed server, then again). `--via bridge|tls|psk` puts the nbdkit bridge of
// the TLS rows (bench/lib/tls.ts) between fio and the server, to compare the same passes with and
// without it. Answers the bridge rows' 42,008 ms/GiB against ~9,900 direct (bench/README.md).
//   node --import tsx bench/micro/write-passes.ts [--via direct|bridge|tls|psk] [--writes 8192] [--reps 1]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runFio } from '../lib/clients.ts';
import { createImage } from '../lib/image.ts';
import { processCpuSeconds } from '../lib/machine.ts';
import { exportNameOf, SNAPNBD_BIN, startSnapnbd, type BenchContext } from '../lib/peers.ts';
import { installExitHandlers } from '../lib/procs.ts';
import { round } from '../lib/stats.ts';
import { startBridge, tlsServerArgs, viaTls, type Via } from '../lib/tls.ts';

const IMAGE_BYTES = 1024 * 2 ** 20;
const HALF = IMAGE_BYTES / 2;
const BLOCK = 4096;
const PASSES = [
  { name: 'low half, first writes', offset: 0 },
  { name: 'low half, again', offset: 0 },
  { name: 'high half, first writes', offset: HALF },
  { name: 'high half, again', offset: HALF },
];

const { values: v } = parseArgs({ options: { via: { type: 'string' }, writes: { type: 'string' }, reps: { type: 'string' } } });
const via = (v.via ?? 'direct') as Via | 'direct';
if (!['direct', 'bridge', 'tls', 'psk'].includes(via)) throw new Error(`--via: direct, bridge, tls or psk, not ${via}`);
const writes = Number(v.writes ?? 8192);
const reps = Number(v.reps ?? 1);

installExitHandlers();
const workDir = mkdtempSync(join(tmpdir(), 'snapnbd-passes-'));
const image = join(workDir, 'bench.raw');
const ctx: BenchContext = { workDir, image, imageBytes: IMAGE_BYTES, snapnbdEnv: {}, snapnbdBin: SNAPNBD_BIN, compareBin: null, cpuProfDir: null, verbose: false };
try {
  createImage(image, IMAGE_BYTES);
  process.stdout.write(`| rep | pass (${writes} random 4 KiB writes, via ${via}) | IOPS | server CPU ms/GiB |\n|---|---|---:|---:|\n`);
  for (let rep = 1; rep <= reps; rep++) {
    const tlsArgs = via !== 'direct' && viaTls(via) ? tlsServerArgs('snapnbd', via) : [];
    const inst = await startSnapnbd(ctx, { args: [image, ...tlsArgs], exportName: exportNameOf(image) });
    const bridge = via === 'direct' ? null : await startBridge(inst, via, workDir);
    try {
      for (const [i, p] of PASSES.entries()) {
        const cpu0 = processCpuSeconds(inst.pid);
        // The same seed in both passes of a half: "again" rewrites exactly the chunks just copied.
        const m = await runFio(bridge?.uri ?? inst.uri, `pass${i}`, {
          rw: 'randwrite', bs: '4k', iodepth: 32, offset: p.offset, size: HALF, io_size: writes * BLOCK, randseed: rep,
        }, [], workDir);
        const cpu1 = processCpuSeconds(inst.pid);
        const ms = cpu0 === null || cpu1 === null ? null : ((cpu1 - cpu0) * 1000) / (m.bytes / 2 ** 30);
        process.stdout.write(`| ${rep} | ${p.name} | ${round(m.iops, 0)} | ${ms === null ? '–' : round(ms, 0)} |\n`);
      }
    } finally {
      await bridge?.stop();
      await inst.stop();
    }
  }
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
