// The servers under comparison, each started fresh for one measurement and stopped after it.
// Settings chosen for fairness (all of them use the page cache, none syncs per write, all allow
// several connections) and documented in bench/README.md:
//   snapnbd      bin/snapnbd serve, the raw image as read-only backing of volume `bench`
//   nbdkit-file  nbdkit file (raw, no copy-on-write: the speed reference); writes go to a copy
//   nbdkit-cow   nbdkit --filter=cow file IMAGE (overlay in the run's temp dir, 64 KiB blocks)
//   qemu-nbd     qcow2 overlay (64 KiB clusters) on the raw image, --cache=writeback --aio=threads
import { copyFileSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { BASE_PEER, type PeerName } from './config.ts';
import { freePort, run, spawnTracked, waitLine, waitListening, type Tracked } from './procs.ts';
import { tlsServerArgs } from './tls.ts';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
export const SNAPNBD_BIN = join(REPO_ROOT, 'bin', 'snapnbd');
/** qemu-nbd serves one client unless told otherwise; the multi-connection run needs 4. */
const QEMU_NBD_MAX_CLIENTS = 8;

export interface PeerInstance {
  peer: PeerName;
  uri: string;
  pid: number;
  /** snapnbd's control socket. */
  controlPath: string | null;
  /** snapnbd's data dir (for space accounting). */
  dataDir: string | null;
  /** Why this run differs from the plan (e.g. the interim snapnbd backend). */
  note: string | null;
  proc: Tracked;
  stop(): Promise<void>;
}

export interface BenchContext {
  workDir: string;
  image: string;
  imageBytes: number;
  snapnbdEnv: Record<string, string>;
  /** The snapnbd entry point (default bin/snapnbd; another checkout's to compare builds). */
  snapnbdBin: string;
  /** `--compare`: the other build, served as peer snapnbd-base. */
  compareBin: string | null;
  cpuProfDir: string | null;
  /** `--loop-watch`: bench/lib/loop-watch.mjs is preloaded into snapnbd, its records go here. */
  loopWatchDir?: string | null;
  /** `--kernel-stacks`: bench/lib/kernel-stacks.mjs samples snapnbd's blocked threads into here. */
  kernelStacksDir?: string | null;
  verbose: boolean;
}

let runCounter = 0;
function newRunDir(ctx: BenchContext, peer: string): string {
  const dir = join(ctx.workDir, `run-${++runCounter}-${peer}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function exportNameOf(image: string): string {
  return basename(image, extname(image));
}

/** The copy of the image that nbdkit file writes into (the original stays pristine). */
export function writableCopy(ctx: BenchContext): string {
  const copy = join(ctx.workDir, 'nbdkit-file-rw.raw');
  if (!existsSync(copy)) copyFileSync(ctx.image, copy);
  return copy;
}

export interface SnapnbdStart {
  /** Extra serve arguments (volumes, images). */
  args: string[];
  unix?: boolean;
  /** Export the URI points at. */
  exportName: string;
  /** An existing data dir (default: a fresh one in the run's directory). */
  dataDir?: string;
}

export async function startSnapnbd(ctx: BenchContext, s: SnapnbdStart, peer: PeerName = 'snapnbd'): Promise<PeerInstance> {
  const dir = newRunDir(ctx, peer);
  const sock = join(dir, 'nbd.sock');
  const listen = s.unix ? ['--listen', `unix:${sock}`] : ['--listen', '127.0.0.1:0'];
  const nodeArgs = ctx.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', resolve(ctx.cpuProfDir)] : [];
  const bin = peer === BASE_PEER ? ctx.compareBin : ctx.snapnbdBin;
  if (!bin) throw new Error(`no entry point for ${peer}`);
  const watch = ctx.loopWatchDir ? ['--import', join(REPO_ROOT, 'bench', 'lib', 'loop-watch.mjs')] : [];
  const watchEnv = ctx.loopWatchDir ? { SNAPNBD_LOOP_WATCH: resolve(ctx.loopWatchDir) } : {};
  const p = spawnTracked(process.execPath, [
    ...nodeArgs, ...watch, bin, 'serve', '--data-dir', s.dataDir ?? join(dir, 'data'), ...listen, '--log-level', 'warn', ...s.args,
  ], { env: { ...process.env, ...ctx.snapnbdEnv, ...watchEnv }, cwd: REPO_ROOT });
  await waitLine(p, (l) => l === 'ready');
  const sampler = ctx.kernelStacksDir
    ? spawnTracked(process.execPath, [join(REPO_ROOT, 'bench', 'lib', 'kernel-stacks.mjs'), String(p.pid), join(resolve(ctx.kernelStacksDir), `kernel-stacks-${p.pid}.json`)])
    : null;
  const tcp = /^listening nbd 127\.0\.0\.1:(\d+)$/m.exec(p.stdout());
  const ctl = /^listening control (.+)$/m.exec(p.stdout());
  const uri = s.unix ? `nbd+unix:///${s.exportName}?socket=${sock}` : `nbd://127.0.0.1:${tcp?.[1] ?? '0'}/${s.exportName}`;
  if (!s.unix && !tcp) throw new Error(`snapnbd printed no TCP listener:\n${p.stdout()}`);
  return {
    peer, uri, pid: p.pid, proc: p, note: null, dataDir: s.dataDir ?? join(dir, 'data'),
    controlPath: ctl?.[1] ?? join(s.dataDir ?? join(dir, 'data'), 'control.sock'),
    async stop() {
      // SIGTERM: a graceful stop also lets --cpu-prof write its profile.
      await p.stop();
      // At SIGTERM the sampler writes its file (the server is gone: nothing more to sample).
      await sampler?.stop();
      if (!ctx.verbose) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Whether snapnbd serves an IMAGE read-write (false on the interim raw backend). */
let snapnbdImageWritable: boolean | null = null;

async function isReadOnly(uri: string): Promise<boolean> {
  const { stdout } = await run('nbdinfo', ['--json', uri], { timeoutMs: 30_000 });
  const j = JSON.parse(stdout) as { exports: { is_read_only: boolean }[] };
  return j.exports[0]?.is_read_only ?? true;
}

/** `tls`: TLS required, with client certificates checked or a PSK (bench/lib/tls.ts; snapnbd, nbdkit-file and nbdkit-cow). */
export async function startPeer(ctx: BenchContext, peer: PeerName, writes: boolean, tls: 'tls' | 'psk' | null = null): Promise<PeerInstance> {
  const name = exportNameOf(ctx.image);
  const tlsArgs = tls ? tlsServerArgs(peer, tls) : [];
  switch (peer) {
    case 'snapnbd':
    case BASE_PEER:
    case 'snapnbd-unix': {
      const unix = peer === 'snapnbd-unix';
      if (writes && snapnbdImageWritable === null) {
        const probe = await startSnapnbd(ctx, { args: [ctx.image], exportName: name }, peer);
        try { snapnbdImageWritable = !(await isReadOnly(probe.uri)); } finally { await probe.stop(); }
      }
      if (writes && snapnbdImageWritable === false) {
        // Interim server (before the copy-on-write engine): an IMAGE is served read-only, so
        // write workloads go to a plain volume of the same size, without backing.
        const inst = await startSnapnbd(ctx, { args: ['--volume', `${name}=${ctx.imageBytes}`, ...tlsArgs], exportName: name, unix }, peer);
        inst.note = 'interim: IMAGE served read-only, writes went to a plain volume without backing';
        return inst;
      }
      return startSnapnbd(ctx, { args: [ctx.image, ...tlsArgs], exportName: name, unix }, peer);
    }
    case 'nbdkit-file':
    case 'nbdkit-cow': {
      const dir = newRunDir(ctx, peer);
      const port = await freePort();
      const cow = peer === 'nbdkit-cow';
      const file = cow ? ctx.image : writes ? writableCopy(ctx) : ctx.image;
      const args = ['-f', '-i', '127.0.0.1', '-p', String(port), '-e', name, ...tlsArgs,
        ...(cow ? ['--filter=cow'] : []), ...(!cow && !writes ? ['-r'] : []), 'file', file];
      // The cow filter puts its overlay in TMPDIR: the run dir, on the same disk as ours.
      const p = spawnTracked('nbdkit', args, { env: { ...process.env, TMPDIR: dir, LARGE_TMPDIR: dir } });
      await waitListening(p, { port });
      return {
        peer, uri: `nbd://127.0.0.1:${port}/${name}`, pid: p.pid, proc: p, controlPath: null, dataDir: null, note: null,
        async stop() { await p.stop(); rmSync(dir, { recursive: true, force: true }); },
      };
    }
    case 'qemu-nbd': {
      const dir = newRunDir(ctx, peer);
      const overlay = join(dir, 'overlay.qcow2');
      await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', ctx.image, '-F', 'raw', overlay]);
      const port = await freePort();
      const p = spawnTracked('qemu-nbd', ['-t', '-b', '127.0.0.1', '-p', String(port), '-x', name,
        '-f', 'qcow2', '--cache=writeback', '--aio=threads', '--discard=unmap',
        '-e', String(QEMU_NBD_MAX_CLIENTS), overlay]);
      await waitListening(p, { port });
      return {
        peer, uri: `nbd://127.0.0.1:${port}/${name}`, pid: p.pid, proc: p, controlPath: null, dataDir: null, note: null,
        async stop() { await p.stop(); rmSync(dir, { recursive: true, force: true }); },
      };
    }
  }
}
