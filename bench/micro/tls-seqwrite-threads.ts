// Server CPU per GiB of bridged 1 MiB sequential writes (the bench's tls-seqwrite-1m path: fio ->
// nbdkit bridge -> snapnbd over TLS, bench/lib/tls.ts), split by thread from /proc/PID/task: the
// event loop (`main`) and the rest (`node`: libuv's pool and V8's helper threads, GC among them).
// Two passes on one fresh server: 1 GiB over unmapped chunks (the image is the volume's backing,
// as in bench/run.ts), then 2 GiB over mapped ones. Fixed amounts of work, so the figure holds
// on a loaded machine better than a timed row's.
//   node --import tsx bench/micro/tls-seqwrite-threads.ts [BIN, default bin/snapnbd] [tls|bridge]
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runFio } from '../lib/clients.ts';
import { createImage } from '../lib/image.ts';
import { exportNameOf, SNAPNBD_BIN, startSnapnbd, type BenchContext } from '../lib/peers.ts';
import { installExitHandlers } from '../lib/procs.ts';
import { startBridge, tlsServerArgs } from '../lib/tls.ts';
installExitHandlers();
const bin = process.argv[2] ?? SNAPNBD_BIN;
const via = (process.argv[3] ?? 'tls') as 'tls' | 'bridge';
const workDir = mkdtempSync(join(tmpdir(), 'w7probe-'));
const image = join(workDir, 'img.raw');
createImage(image, 2 ** 30);
function threads(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const st = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const comm = st.slice(st.indexOf('(') + 1, st.lastIndexOf(')'));
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      const ticks = Number(f[11]) + Number(f[12]);
      const k = t === String(pid) ? 'main' : comm;
      out.set(k, (out.get(k) ?? 0) + ticks * 10);
    } catch { /* gone */ }
  }
  return out;
}
const ctx: BenchContext = { workDir, image, imageBytes: 2 ** 30, snapnbdEnv: {}, snapnbdBin: bin, compareBin: null, cpuProfDir: null, verbose: false };
const inst = await startSnapnbd(ctx, { args: [image, ...(via === 'tls' ? tlsServerArgs('snapnbd', 'tls') : [])], exportName: exportNameOf(image) });
const bridge = await startBridge(inst, via, workDir);
try {
  const f0 = threads(inst.pid);
  const tf = Date.now();
  const fm = await runFio(bridge.uri, 'fill', { rw: 'write', bs: '1M', iodepth: 8, size: 2 ** 30 }, [], workDir);
  const a = threads(inst.pid);
  const fr = [...a].map(([k, v]) => [k, (v - (f0.get(k) ?? 0)) / (fm.bytes / 2 ** 30)] as const).filter(([, v]) => v > 0);
  console.log(`first pass (unmapped chunks over the backing image): ${(fm.bytes / 2 ** 20 / ((Date.now() - tf) / 1000)).toFixed(0)} MiB/s;`, fr.map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', '), 'total', fr.reduce((s, [, v]) => s + v, 0).toFixed(0));
  const t0 = Date.now();
  const m = await runFio(bridge.uri, 'sw', { rw: 'write', bs: '1M', iodepth: 8, size: 2 ** 30, io_size: 2 * 2 ** 30 }, [], workDir);
  const b = threads(inst.pid);
  const gib = m.bytes / 2 ** 30;
  const rows = [...b].map(([k, v]) => [k, (v - (a.get(k) ?? 0)) / gib] as const).filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1]);
  console.log(`${bin} ${via}: ${(m.bytes / 2 ** 20 / ((Date.now() - t0) / 1000)).toFixed(0)} MiB/s; ms CPU per GiB by thread:`, rows.map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', '), 'total', rows.reduce((s, [, v]) => s + v, 0).toFixed(0));
} finally {
  await bridge.stop();
  await inst.stop();
  rmSync(workDir, { recursive: true, force: true });
}
