// CPU time of a plain restore against restic's, same backup image, same RGW (test/helpers/rgw.ts):
// the restoring server's CPU from /proc/PID/stat around `backup restore`, restic's from
// /usr/bin/time (user + sys, all its threads). CPU seconds, unlike wall time, mean something on
// a loaded machine. With --profile-dir DIR the restoring server runs with `node --cpu-prof`
// (written to DIR when it stops).
//
//   node --import tsx bench/restore-cpu.ts [--size-mib 512] [--rounds 2] [--profile-dir DIR]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { startRgw } from '../test/helpers/rgw.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../test/helpers/server.ts';
const run = promisify(execFile);
const MiB = 1024 * 1024;
const { values } = parseArgs({ options: { 'size-mib': { type: 'string' }, rounds: { type: 'string' }, 'profile-dir': { type: 'string' } } });
const sizeMiB = Number(values['size-mib'] ?? 512);
const rounds = Number(values.rounds ?? 2);
/** CLK_TCK: /proc/PID/stat counts CPU time in these per second. */
const TICKS_PER_SECOND = 100;
/** utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat). */
const cpu = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_SECOND;
};
async function cli(s: { controlPath: string }, args: string[]): Promise<Record<string, unknown>> {
  const r = await run(process.execPath, [SNAPNBD_BIN, ...args, '--json', '--control', s.controlPath], { maxBuffer: 64 * MiB });
  return JSON.parse(r.stdout) as Record<string, unknown>;
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
  const args = ['--backup-target', 'b=s3://snapnbd/x'];
  const a = await startServer({ args, env });
  servers.push(a);
  let b: RunningServer;
  const profileDir = values['profile-dir'];
  if (profileDir) {
    // --cpu-prof is refused in NODE_OPTIONS: a wrapper runs bin/snapnbd under it.
    const wrapper = join(work, 'snapnbd-profiled');
    writeFileSync(wrapper, `#!/bin/sh\nexec '${process.execPath}' --cpu-prof --cpu-prof-dir='${profileDir}' '${SNAPNBD_BIN}' "$@"\n`, { mode: 0o755 });
    b = await startServer({ args, env: { ...process.env, ...env }, installed: { bin: wrapper, cwd: work } });
  } else {
    b = await startServer({ args, env });
  }
  servers.push(b);
  await cli(a, ['volume', 'create', 'vm', '--size', `${sizeMiB}M`]);
  await run('nbdcopy', [image, a.uri('vm')]);
  await cli(a, ['snapshot', 'create', 'vm@s1']);
  const full = await cli(a, ['backup', 'create', 'vm@s1', '--target', 'b']);
  const renv = { ...process.env, ...env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: `s3:${rgw.endpoint}/restic/repo`, RESTIC_CACHE_DIR: join(work, 'restic-cache') };
  await run('restic', ['init'], { env: renv });
  await run('restic', ['backup', '--quiet', image], { env: renv });
  for (let round = 0; round < rounds; round++) {
    const c0 = cpu(b.proc.pid!);
    const t0 = performance.now();
    await cli(b, ['backup', 'restore', String(full.id), `r${round}`, '--target', 'b']);
    const t1 = performance.now();
    const c1 = cpu(b.proc.pid!);
    mkdirSync(join(work, `rr${round}`));
    const t2 = performance.now();
    const r = await run('bash', ['-c', `/usr/bin/time -f '%U %S' restic restore latest --target ${join(work, `rr${round}`)} 2>&1 >/dev/null | tail -1`], { env: renv });
    const t3 = performance.now();
    rmSync(join(work, `rr${round}`), { recursive: true });
    const [u, s] = r.stdout.trim().split(' ').map(Number);
    process.stdout.write(`round ${round}: snapnbd restore ${((t1 - t0) / 1000).toFixed(2)} s wall, server CPU ${(c1 - c0).toFixed(2)} s; restic restore ${((t3 - t2) / 1000).toFixed(2)} s wall, CPU ${(u! + s!).toFixed(2)} s (user ${u} sys ${s})\n`);
  }
} finally {
  for (const s of servers) await s.stop(); // the profile is written as the server exits
  await rgw.stop();
  rmSync(work, { recursive: true, force: true });
}
