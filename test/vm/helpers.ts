// Guest-side steps the VM scenarios share: attaching exports with the kernel's nbd-client,
// writing files whose checksums are taken from the data stream as it is written (not read back
// from the page cache), and listing a directory's files with their checksums.
import { execFileSync } from 'node:child_process';
import { GUEST_NBD_HOST, GUEST_NBD_PORT, RUN_TIMEOUT_MS, type Guest } from './guest.ts';
import { ControlCallError, controlCall } from './control.ts';

export { freePort } from '../helpers/peers.ts';

/** What one VM scenario (or a VM's boot and shutdown, as hooks) may take on a loaded machine (TCG). */
export const SCENARIO_TIMEOUT_MS = 600_000;
/** Block size of the files the scenarios write (dd bs); counts below are in these units. */
export const FILE_BLOCK = 65536;
/**
 * A guest command moving file data through TCG (urandom, sha256sum, the NBD writes) may take
 * this long per MiB. The TRIM scenario (128 MiB written twice, synced, read back) took 272 s in
 * all at load 13, under 1 s per MiB moved; a fixed RUN_TIMEOUT_MS (180 s) for one 128 MiB
 * command left too little room on a CI machine loaded more. Small commands keep RUN_TIMEOUT_MS.
 */
const BULK_MS_PER_MIB = 4_000;
const MIB = 1024 * 1024;

/** The time a guest command that writes or reads `bytes` of files gets. */
export function bulkTimeoutMs(bytes: number): number {
  return Math.max(RUN_TIMEOUT_MS, Math.ceil(bytes / MIB) * BULK_MS_PER_MIB);
}

/** A server that still counts a client that left this long ago has a bug, not a slow machine. */
const SERVER_CATCH_UP_MS = 60_000;
const POLL_MS = 250;

export type Checksums = Record<string, string>;

/** nbd-client attaching EXPORT on DEVICE (extra flags: '-readonly', '-C 4', '-persist'). */
export async function attach(g: Guest, device: string, exportName: string, flags = ''): Promise<void> {
  await g.sh(`/sbin/nbd-client ${GUEST_NBD_HOST} ${GUEST_NBD_PORT} ${device} -N ${exportName} ${flags}`);
}

export async function detach(g: Guest, device: string): Promise<void> {
  await g.sh(`/sbin/nbd-client -d ${device}`);
}

/** The bytes of files given as NAME: COUNT blocks of FILE_BLOCK. */
export function filesBytes(files: Record<string, number>): number {
  return Object.values(files).reduce((sum, n) => sum + n * FILE_BLOCK, 0);
}

/** Writes each file NAME of COUNT random blocks into DIR; returns the checksums of what was written. */
export async function writeRandomFiles(g: Guest, dir: string, files: Record<string, number>, parallel = false): Promise<Checksums> {
  const names = Object.keys(files);
  const lines = names.map((n) =>
    `(dd if=/dev/urandom bs=${FILE_BLOCK} count=${files[n]} 2>/dev/null | tee ${dir}/${n} | sha256sum | sed 's/ .*/ ${n}/' > /tmp/.sum.${n})${parallel ? ' &' : ''}`);
  const out = await g.sh([...lines, 'wait', ...names.map((n) => `cat /tmp/.sum.${n}`)].join('\n'), bulkTimeoutMs(filesBytes(files)));
  const sums = parseSums(out);
  for (const n of names) if (!sums[n]) throw new Error(`no checksum for ${n} in:\n${out}`);
  return sums;
}

/**
 * Every regular file under DIR (top level) with its checksum, read from the device (caches
 * dropped); `bytes`: about how much that reads (more time for large files, bulkTimeoutMs).
 */
export async function listChecksums(g: Guest, dir: string, bytes = 0): Promise<Checksums> {
  const out = await g.sh(`echo 3 > /proc/sys/vm/drop_caches\ncd ${dir} && for f in *; do [ -f "$f" ] && sha256sum "$f"; done; true`, bulkTimeoutMs(bytes));
  return parseSums(out);
}

function parseSums(out: string): Checksums {
  const sums: Checksums = {};
  for (const m of out.matchAll(/^([0-9a-f]{64}) +(\S+)$/gm)) sums[m[2]!] = m[1]!;
  return sums;
}

export interface ExportStats { name: string; connections: number; requests: number; bytesRead: number; bytesWritten: number }

export async function exportStats(controlPath: string, name: string): Promise<ExportStats | undefined> {
  const s = await controlCall(controlPath, 'server.stats') as { exports: ExportStats[] };
  return s.exports.find((e) => e.name === name);
}

/** Polls until `ok()` is true, or fails with `what` after SERVER_CATCH_UP_MS. */
export async function eventually<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, limitMs = SERVER_CATCH_UP_MS): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(v)} after ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** A control call retried while the server still counts a just-detached client (VOLUME_BUSY). */
export async function callWhenIdle(controlPath: string, method: string, params: Record<string, unknown>): Promise<any> {
  const deadline = Date.now() + SERVER_CATCH_UP_MS;
  for (;;) {
    try {
      return await controlCall(controlPath, method, params);
    } catch (e) {
      if (!(e instanceof ControlCallError) || e.code !== 'VOLUME_BUSY' || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}

/** Bytes the files under DIR occupy on disk (du -B1: st_blocks, sparse files counted as such). */
export function diskUsage(dir: string): number {
  return Number(execFileSync('du', ['-s', '-B1', dir], { encoding: 'utf8' }).split('\t')[0]);
}

