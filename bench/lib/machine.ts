// The facts a result needs to be read later: versions of every peer and client, the commit, the
// machine. And the page-cache controls for hot and cold runs.
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from './peers.ts';

function firstLine(cmd: string, args: string[]): string {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO_ROOT });
    return out.split('\n')[0]!.trim();
  } catch {
    return 'unknown';
  }
}

export interface MachineInfo {
  commit: string;
  dirty: boolean;
  /** Absent in results written before stop 33. */
  snapnbd?: CheckoutInfo;
  base?: CheckoutInfo | null;
  node: string;
  fio: string;
  nbdkit: string;
  qemu: string;
  nbdcopy: string;
  cpu: string;
  cpus: number;
  memGiB: number;
  kernel: string;
  uvThreadpoolSize: string;
}

/** The checkout a snapnbd entry point (`--snapnbd-bin`, `--compare`) runs from, and its commit. */
export interface CheckoutInfo { bin: string; commit: string; dirty: boolean }

/** A checkout's HEAD and whether tracked files differ from it. */
function gitState(dir: string): { commit: string; dirty: boolean } {
  const git = ['-C', dir];
  return { commit: firstLine('git', [...git, 'rev-parse', 'HEAD']), dirty: firstLine('git', [...git, 'status', '--porcelain', '--untracked-files=no']) !== '' };
}

function checkoutOf(bin: string): CheckoutInfo {
  return { bin, ...gitState(join(dirname(bin), '..')) };
}

/** `snapnbdBin`, `compareBin`: which builds ran as snapnbd and as the base (the harness's commit is `commit`). */
export function machineInfo(snapnbdEnv: Record<string, string>, snapnbdBin: string, compareBin: string | null): MachineInfo {
  return {
    ...gitState(REPO_ROOT),
    snapnbd: checkoutOf(snapnbdBin),
    base: compareBin ? checkoutOf(compareBin) : null,
    node: process.version,
    fio: firstLine('fio', ['--version']),
    nbdkit: firstLine('nbdkit', ['--version']),
    qemu: firstLine('qemu-nbd', ['--version']),
    nbdcopy: firstLine('nbdcopy', ['--version']),
    cpu: cpus()[0]?.model ?? 'unknown',
    cpus: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    uvThreadpoolSize: snapnbdEnv.UV_THREADPOOL_SIZE ?? 'default (4)',
  };
}

/**
 * Before every run, hot or cold: write back the dirty pages earlier runs left (any peer's), so no
 * run pays for another's writeback. A hot 1 MiB write run that started while 3 GiB of earlier
 * writes were written back ran at 0.94 GB/s against 2.9 GB/s (bench/README.md, stop 26).
 */
export function writeBack(): void {
  execFileSync('sync');
}

/** Cold cache: write back dirty pages and drop the page cache (root only). */
export function dropCaches(): void {
  execFileSync('sync');
  writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

const WARM_CHUNK = 8 * 2 ** 20;

/**
 * How much recycleFreeMemory frees for a run on an image of `imageBytes`: the image (a fresh
 * overlay's new page cache) and a quarter more (the server's own buffers; 1.25 GiB for 1 GiB).
 */
export function recycleBytesFor(imageBytes: number): number {
  return imageBytes + imageBytes / 4;
}

/**
 * Right before every write run, hot or cold: write a scratch file of `bytes` into the page cache
 * and delete it, so the pages the run's server then allocates (a copy-on-write peer's fresh
 * overlay: up to the image's size of new page cache) were freed a moment ago, whatever ran before.
 * On this VM memory that has sat free for a few seconds is handed back to the host (free page
 * reporting), and the first write into it costs ~1-3 s of system time per GiB (host faults seen
 * as a slow copy_folio_from_iter_atomic) against ~0.3 s for pages freed just before. Without this
 * a snapnbd repetition was fast only right after another snapnbd repetition, whose deleted store
 * it reused (bench/README.md, "Hot sequential writes: the page cache pages a run gets").
 * Deleted before writeback, the scratch file costs no disk I/O.
 */
export function recycleFreeMemory(dir: string, bytes: number): void {
  const path = join(dir, 'recycle.scratch');
  const buf = Buffer.alloc(WARM_CHUNK);
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < bytes; off += WARM_CHUNK) writeSync(fd, buf, 0, Math.min(WARM_CHUNK, bytes - off), off);
  } finally {
    closeSync(fd);
    unlinkSync(path);
  }
}
/** Hot cache: read a file through once so it sits in the page cache. */
export function warm(path: string): void {
  const fd = openSync(path, 'r');
  const buf = Buffer.allocUnsafe(WARM_CHUNK);
  try {
    while (readSync(fd, buf, 0, WARM_CHUNK, null) > 0) { /* reading is the point */ }
  } finally {
    closeSync(fd);
  }
}

/** Peak and current resident set size of a process, bytes (from /proc/PID/status). */
export function memoryOf(pid: number): { hwm: number; rss: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 'NaN') * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ; 100 on every Linux port in use). */
const USER_HZ = 100;

/**
 * CPU seconds (user + system, all threads) a process has used so far; null when it is gone or
 * /proc is missing. On a shared machine the server's CPU per byte moved compares builds better
 * than MB/s, which follows whatever else is running.
 */
/**
 * Bytes a process has had read from and written to the disk so far (/proc/PID/io read_bytes,
 * write_bytes: page-cache misses and dirtied pages, not bytes through syscalls); null when unknown.
 */
export function processDiskBytes(pid: number): { read: number; write: number } | null {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (k: string): number => Number(new RegExp(`^${k}: (\\d+)$`, 'm').exec(io)?.[1] ?? 'NaN');
    const r = { read: field('read_bytes'), write: field('write_bytes') };
    return Number.isFinite(r.read) && Number.isFinite(r.write) ? r : null;
  } catch {
    return null;
  }
}

/** User and system CPU seconds and minor/major page faults of a process so far (all threads); null when gone. */
export function processTimes(pid: number): { user: number; sys: number; minflt: number; majflt: number } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) in parentheses, from state (field 3)
    // on: minflt 10, majflt 12, utime 14, stime 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / USER_HZ, sys: Number(f[12]) / USER_HZ, minflt: Number(f[7]), majflt: Number(f[9]) };
  } catch {
    return null;
  }
}

/** User plus system CPU seconds of a process so far (all threads); null when gone. */
export function processCpuSeconds(pid: number): number | null {
  const t = processTimes(pid);
  return t === null ? null : t.user + t.sys;
}
