// CPU time of a full backup and a plain restore against restic's, same image, same RGW
// (test/helpers/rgw.ts): the snapnbd server's CPU from /proc/PID/stat around `backup create`
// (a fresh prefix each round, emptied after it) and around `backup restore`; restic's from
// /usr/bin/time (user + sys, all its threads). CPU seconds, unlike wall time, mean something on
// a loaded machine; each figure is also given per GiB. With --profile-dir DIR the servers run
// with `node --cpu-prof` (written to DIR when they stop). --no-restic skips restic.
//
//   node --import tsx bench/restore-cpu.ts [--size-mib 512] [--rounds 2] [--profile-dir DIR] [--no-restic]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { startRgw } from '../test/helpers/rgw.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../test/helpers/server.ts';
const run = promisify(execFile);
const MiB = 1024 * 1024;
const { values } = parseArgs({ options: { 'size-mib': { type: 'string' }, rounds: { type: 'string' }, 'profile-dir': { type: 'string' }, 'no-restic': { type: 'boolean' } } });
const sizeMiB = Number(values['size-mib'] ?? 512);
const rounds = Number(values.rounds ?? 2);
const withRestic = !values['no-restic'];
/** CLK_TCK: /proc/PID/stat counts CPU time in these per second. */
const TICKS_PER_SECOND = 100;
/** utime + stime of a process (or of one thread: /proc/PID/task/TID), in seconds (fields 14 and 15 of stat). */
const cpuOf = (path: string): number => {
  const f = readFileSync(`${path}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_SECOND;
};
/** CPU seconds per thread name (comm) of a process; the main thread is 'event loop'. */
const threads = (pid: number): Map<string, number> => {
  const out = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = Number(tid) === pid ? 'event loop' : readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out.set(name, (out.get(name) ?? 0) + cpuOf(`/proc/${pid}/task/${tid}`));
    } catch { /* the thread ended */ }
  }
  return out;
};
/** The whole process's CPU, its main thread's (the event loop: the serial part) and each kind of thread's. */
const cpu = (pid: number): { all: number; main: number; byName: Map<string, number> } =>
  ({ all: cpuOf(`/proc/${pid}`), main: cpuOf(`/proc/${pid}/task/${pid}`), byName: threads(pid) });
const perGiB = (s: number): string => `${(s * 1024 / sizeMiB).toFixed(2)} s/GiB`;
async function cli(s: { controlPath: string }, args: string[]): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [SNAPNBD_BIN, ...args, '--json', '--control', s.controlPath], { maxBuffer: 64 * MiB });
  return JSON.parse(r.stdout) as Record<string, unknown>;
}
/** CPU seconds of `pid` and wall seconds around `fn`. */
async function measured(pid: number, fn: () => Promise<unknown>): Promise<string> {
  const c0 = cpu(pid);
  const t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000;
  const c1 = cpu(pid);
  const all = c1.all - c0.all;
  const main = c1.main - c0.main;
  const others = [...c1.byName].filter(([n]) => n !== 'event loop').map(([n, v]) => `${n} ${(v - (c0.byName.get(n) ?? 0)).toFixed(2)}`).join(', ');
  return `${wall.toFixed(2)} s wall, server CPU ${all.toFixed(2)} s = ${perGiB(all)} (event loop ${main.toFixed(2)} s = ${perGiB(main)}; other threads, s: ${others})`;
}
const work = tempDir('snapnbd-restore-cpu-');
const rgw = await startRgw();
const servers: RunningServer[] = [];
try {
  for (const b of ['snapnbd', 'restic']) await rgw.makeBucket(b);
  const image = join(work, 'image.raw');
  const fd = openSync(image, 'w');
  for (let i = 0; i < sizeMiB; i += 16) writeSync(fd, randomBytes(16 * MiB));
  closeSync(fd);
  const env = rgw.env;
  const args = ['--backup-target', 'b=s3://snapnbd/x', '--backup-target', 'c=s3://snapnbd/rounds'];
  const profileDir = values['profile-dir'];
  const start = async (): Promise<RunningServer> => {
    if (!profileDir) return startServer({ args, env });
    // --cpu-prof is refused in NODE_OPTIONS: a wrapper runs bin/snapnbd under it.
    const wrapper = join(work, 'snapnbd-profiled');
    writeFileSync(wrapper, `#!/bin/sh\nexec '${process.execPath}' --cpu-prof --cpu-prof-dir='${profileDir}' '${SNAPNBD_BIN}' "$@"\n`, { mode: 0o755 });
    return startServer({ args, env: { ...process.env, ...env }, installed: { bin: wrapper, cwd: work } });
  };
  const a = await start();
  servers.push(a);
  const b = await start();
  servers.push(b);
  await cli(a, ['volume', 'create', 'vm', '--size', `${sizeMiB}M`]);
  await run('nbdcopy', [image, a.uri('vm')]);
  await cli(a, ['snapshot', 'create', 'vm@s1']);
  const full = await cli(a, ['backup', 'create', 'vm@s1', '--target', 'b']);
  const renv = { ...process.env, ...env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: `s3:${rgw.endpoint}/restic/repo`, RESTIC_CACHE_DIR: join(work, 'restic-cache') };
  const restic = async (args: string): Promise<string> => {
    const t0 = performance.now();
    const r = await run('bash', ['-c', `/usr/bin/time -f '%U %S' restic ${args} 2>&1 >/dev/null | tail -1`], { env: renv });
    const wall = (performance.now() - t0) / 1000;
    const [u, s] = r.stdout.trim().split(' ').map(Number);
    return `restic ${wall.toFixed(2)} s wall, CPU ${(u! + s!).toFixed(2)} s = ${perGiB(u! + s!)} (user ${u} sys ${s})`;
  };
  if (withRestic) {
    await run('restic', ['init'], { env: renv });
    process.stdout.write(`first backup into an empty repository: ${await restic(`backup --quiet ${image}`)}\n`);
  }
  for (let round = 0; round < rounds; round++) {
    const up = await measured(a.proc.pid!, () => cli(a, ['backup', 'create', 'vm@s1', '--target', 'c']));
    await rgw.aws(['s3', 'rm', '--quiet', '--recursive', 's3://snapnbd/rounds/blocks/']);
    process.stdout.write(`round ${round}: snapnbd full backup ${up}\n`);
    const down = await measured(b.proc.pid!, () => cli(b, ['backup', 'restore', String(full.id), `r${round}`, '--target', 'b']));
    await cli(b, ['volume', 'delete', `r${round}`]);
    let rd = '';
    if (withRestic) {
      mkdirSync(join(work, `rr${round}`));
      rd = `; ${await restic(`restore latest --target ${join(work, `rr${round}`)}`)}`;
      rmSync(join(work, `rr${round}`), { recursive: true });
    }
    process.stdout.write(`round ${round}: snapnbd restore ${down}${rd}\n`);
  }
} finally {
  for (const s of servers) await s.stop(); // the profile is written as the server exits
  await rgw.stop();
  rmSync(work, { recursive: true, force: true });
}
