// Backup throughput against a local Ceph RGW (the test cluster of test/helpers/rgw.ts), side by
// side in one run with `aws s3 cp` of the same raw image and with restic (backup, restore, and an
// incremental after a 1 MiB change). Then an instant restore (command to the first 4 KiB read
// answered; 4 KiB reads while it restores against the same reads after), and the incremental of a
// sparse 1 TiB volume with --big-gib GiB written and 64 MiB then changed, on a file:// target (the
// RGW's memory store holds 2 GiB). Prints markdown tables; speeds are for ratios within a run.
//
//   node --import tsx bench/backup.ts [--size-mib 1024] [--big-gib 8] [--skip-rgw] [--instant-only] [--reps N]
//
// --reps N: the full restore and `aws s3 cp` down N times, interleaved (restore, aws, restore, ...);
// the table shows the medians and each run, with CPU seconds (the restoring server's from
// /proc/PID/stat, aws's user + sys), which mean more than wall time on a loaded machine.
// --instant-only: the full backup, then only the instant restore rows (no aws, no restic).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { promisify } from 'node:util';
import { rawControl, rpc } from '../test/helpers/control-raw.ts';
import { NBD, RawClient } from '../test/helpers/raw-client.ts';
import { startRgw } from '../test/helpers/rgw.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../test/helpers/server.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

/** CLK_TCK: /proc/PID/stat counts CPU time in these per second. */
const TICKS_PER_SECOND = 100;

/** utime + stime of a process, all its threads, in seconds (fields 14 and 15 of /proc/PID/stat). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS_PER_SECOND;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

async function snapnbd(s: RunningServer, args: string[]): Promise<Record<string, number | string>> {
  const r = await run(process.execPath, [SNAPNBD_BIN, ...args, '--json', '--control', s.controlPath], { maxBuffer: 64 * MiB });
  return JSON.parse(r.stdout) as Record<string, number | string>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'size-mib': { type: 'string' }, 'big-gib': { type: 'string' }, 'skip-rgw': { type: 'boolean' }, 'instant-only': { type: 'boolean' }, reps: { type: 'string' } } });
  const reps = Math.max(1, Number(values.reps ?? 1));
  const sizeMiB = Number(values['size-mib'] ?? 1024);
  const bigGiB = Number(values['big-gib'] ?? 8);
  const work = tempDir('snapnbd-bench-backup-');
  if (bigGiB > 0) await bigIncremental(work, bigGiB);
  if (values['skip-rgw']) {
    rmSync(work, { recursive: true, force: true });
    return;
  }
  // The image is stored three times (our backup, aws s3 cp, restic): a full memory store makes
  // RGW hang its clients (a 1 GiB run stopped in 'restic init' with the 2 GiB default).
  const rgw = await startRgw({ memstoreBytes: 4 * sizeMiB * 1024 ** 2 });
  const servers: RunningServer[] = [];
  try {
    for (const b of ['snapnbd', 'raw', 'restic']) await rgw.makeBucket(b);
    const image = join(work, 'image.raw');
    const fd = openSync(image, 'w');
    for (let i = 0; i < sizeMiB; i += 16) writeSync(fd, randomBytes(16 * MiB));
    closeSync(fd);
    const env = rgw.env;
    const a = await startServer({ args: ['--backup-target', 'b=s3://snapnbd/x'], env });
    const b = await startServer({ args: ['--backup-target', 'b=s3://snapnbd/x'], env });
    servers.push(a, b);
    await snapnbd(a, ['volume', 'create', 'vm', '--size', `${sizeMiB}M`]);
    await run('nbdcopy', [image, a.uri('vm')]);
    await snapnbd(a, ['snapshot', 'create', 'vm@s1']);
    let full: Record<string, number | string> = {};
    const tFull = await timed(async () => { full = await snapnbd(a, ['backup', 'create', 'vm@s1', '--target', 'b']); });
    if (values['instant-only']) {
      await instantRestore(b, String(full.id), sizeMiB, null);
      return;
    }
    const tAwsUp = await timed(() => rgw.aws(['s3', 'cp', '--only-show-errors', image, 's3://raw/image.raw']));
    // Restore and aws download interleaved, `reps` times each (CPU seconds beside wall time).
    const restores: { wall: number; cpu: number }[] = [];
    const downs: { wall: number; cpu: number }[] = [];
    for (let i = 0; i < reps; i++) {
      const c0 = cpuSeconds(b.proc.pid!);
      const wall = await timed(() => snapnbd(b, ['backup', 'restore', String(full.id), `r${i}`, '--target', 'b']));
      restores.push({ wall, cpu: cpuSeconds(b.proc.pid!) - c0 });
      if (i < reps - 1) await snapnbd(b, ['volume', 'delete', `r${i}`]);
      let cpu = 0;
      const dw = await timed(async () => {
        const r = await run('/usr/bin/time', ['-f', '%U %S', 'aws', '--endpoint-url', rgw.endpoint, 's3', 'cp', '--only-show-errors', 's3://raw/image.raw', join(work, 'down.raw')], { env: { ...process.env, ...env } });
        const [u, sy] = r.stderr.trim().split('\n').at(-1)!.split(' ').map(Number);
        cpu = u! + sy!;
      });
      downs.push({ wall: dw, cpu });
      rmSync(join(work, 'down.raw'));
    }
    const tRestore = median(restores.map((x) => x.wall));
    const tAwsDown = median(downs.map((x) => x.wall));
    const renv = { ...process.env, ...env, RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: `s3:${rgw.endpoint}/restic/repo`, RESTIC_CACHE_DIR: join(work, 'restic-cache') };
    await run('restic', ['init'], { env: renv });
    const tResticUp = await timed(() => run('restic', ['backup', '--quiet', image], { env: renv }));
    mkdirSync(join(work, 'rr'));
    const tResticDown = await timed(() => run('restic', ['restore', 'latest', '--target', join(work, 'rr')], { env: renv }));
    rmSync(join(work, 'rr'), { recursive: true });
    // 1 MiB changed in the middle, in the volume and in the raw image alike.
    const change = randomBytes(MiB);
    const off = Math.floor(sizeMiB / 2) * MiB + 4096;
    const cf = join(work, 'change');
    const cfd = openSync(cf, 'w'); writeSync(cfd, change); closeSync(cfd);
    await run('qemu-io', ['-f', 'raw', '-c', `write -s ${cf} ${off} ${MiB}`, a.uri('vm')]);
    const ifd = openSync(image, 'r+'); writeSync(ifd, change, 0, MiB, off); closeSync(ifd);
    await snapnbd(a, ['snapshot', 'create', 'vm@s2']);
    let inc: Record<string, number | string> = {};
    const tInc = await timed(async () => { inc = await snapnbd(a, ['backup', 'create', 'vm@s2', '--target', 'b']); });
    const tResticInc = await timed(() => run('restic', ['backup', '--quiet', image], { env: renv }));
    const mb = (s: number): string => (sizeMiB / s).toFixed(1);
    const rows = [
      ['full backup', `${tFull.toFixed(2)} s (${mb(tFull)} MiB/s)`, `${tAwsUp.toFixed(2)} s (${mb(tAwsUp)} MiB/s)`, `${tResticUp.toFixed(2)} s`, (tAwsUp / tFull).toFixed(2), (tResticUp / tFull).toFixed(2)],
      ['full restore', `${tRestore.toFixed(2)} s (${mb(tRestore)} MiB/s)`, `${tAwsDown.toFixed(2)} s (${mb(tAwsDown)} MiB/s)`, `${tResticDown.toFixed(2)} s`, (tAwsDown / tRestore).toFixed(2), (tResticDown / tRestore).toFixed(2)],
      ['incremental, 1 MiB changed', `${tInc.toFixed(2)} s, ${inc.bytesUploaded} B uploaded, ${inc.bytesRead} B read`, '-', `${tResticInc.toFixed(2)} s`, '-', (tResticInc / tInc).toFixed(2)],
    ];
    process.stdout.write(`${sizeMiB} MiB random image, RGW on 127.0.0.1 (memstore), one run${reps > 1 ? ` (restore rows: median of ${reps} interleaved)` : ''}\n\n`);
    process.stdout.write('| operation | snapnbd | aws s3 cp | restic | aws/snapnbd | restic/snapnbd |\n|---|---|---|---|---|---|\n');
    for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`);
    const each = (xs: { wall: number; cpu: number }[]): string => xs.map((x) => `${x.wall.toFixed(2)} s (CPU ${x.cpu.toFixed(2)} s)`).join(', ');
    process.stdout.write(`\nfull restore, each run: snapnbd ${each(restores)}; aws s3 cp ${each(downs)}\n`);
    await instantRestore(b, String(full.id), sizeMiB, tRestore);
  } finally {
    for (const s of servers) await s.stop();
    await rgw.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

/** Polls until the volume's state is `ready` (an instant restore has ended). */
async function untilReady(s: RunningServer, volume: string): Promise<void> {
  for (;;) {
    const l = await snapnbd(s, ['volume', 'list']) as unknown as { volumes: { name: string; state: string }[] };
    if (l.volumes.find((v) => v.name === volume)?.state === 'ready') return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** 4 KiB reads at `offsets` in one qemu-io session; seconds. */
function reads(s: RunningServer, volume: string, offsets: number[]): Promise<number> {
  return timed(() => run('qemu-io', ['-f', 'raw', ...offsets.flatMap((o) => ['-c', `read ${o} 4096`]), s.uri(volume)]));
}

/** Seconds since `t0` (process.hrtime.bigint()). */
const since = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e9;

/** In process, no CLI and no qemu-io start: the control call `backup.restore {instant: true}`,
 *  then a raw NBD client's connect and handshake, then one 4 KiB read at `offset`; seconds from
 *  the call's send to each step's answer. */
async function firstReadInProcess(s: RunningServer, id: string, volume: string, offset: number): Promise<{ call: number; open: number; read: number }> {
  const ctl = await rawControl(s.controlPath);
  try {
    const t0 = process.hrtime.bigint();
    ctl.send(rpc(1, 'backup.restore', { target: 'b', id, volume, instant: true }));
    const ans = await ctl.next() as { error?: { message: string } };
    if (ans.error) throw new Error(`backup.restore: ${ans.error.message}`);
    const call = since(t0);
    const c = await RawClient.connect(s.port);
    try {
      await c.handshake();
      await c.go(volume);
      const open = since(t0);
      c.request({ type: NBD.CMD_READ, offset, length: 4096 });
      const r = await c.simpleReply(4096);
      if (r.error !== 0) throw new Error(`read: NBD error ${r.error}`);
      return { call, open, read: since(t0) };
    } finally {
      c.destroy();
    }
  } finally {
    ctl.close();
  }
}

async function instantRestore(b: RunningServer, id: string, sizeMiB: number, tPlain: number | null): Promise<void> {
  const READS = 64;
  const offsets = Array.from({ length: READS }, () => Math.floor(Math.random() * (sizeMiB * MiB / 4096)) * 4096);
  // In process first (a fresh volume each: the first read of a block not restored yet).
  const IN_PROCESS_RUNS = 3;
  const inProc: { call: number; open: number; read: number }[] = [];
  for (let i = 0; i < IN_PROCESS_RUNS; i++) {
    inProc.push(await firstReadInProcess(b, id, `rq${i}`, Math.floor(sizeMiB * (0.3 + 0.2 * i)) * MiB + 8192));
    await untilReady(b, `rq${i}`);
  }
  const t0 = process.hrtime.bigint();
  await snapnbd(b, ['backup', 'restore', id, 'ri', '--target', 'b', '--instant']);
  const tCommand = since(t0);
  await run('qemu-io', ['-f', 'raw', '-c', `read ${Math.floor(sizeMiB / 2) * MiB + 8192} 4096`, b.uri('ri')]);
  const tFirst = since(t0);
  const tDuring = await reads(b, 'ri', offsets);
  await untilReady(b, 'ri');
  const tAll = since(t0);
  const tAfter = await reads(b, 'ri', offsets);
  const tIdle = await reads(b, 'ri', offsets.map((o) => (o + 2 * MiB) % (sizeMiB * MiB)));
  const ms = (x: number): string => `${(x * 1000).toFixed(0)} ms`;
  process.stdout.write(`\n| instant restore (${sizeMiB} MiB, RGW) | time |\n|---|---|\n`);
  for (const [i, r] of inProc.entries()) {
    process.stdout.write(`| in process, run ${i + 1}: control call answered / NBD export open / first 4 KiB read answered | ${ms(r.call)} / ${ms(r.open)} / ${ms(r.read)} |\n`);
  }
  process.stdout.write(`| CLI: command answered (volume usable) | ${tCommand.toFixed(3)} s |\n`);
  process.stdout.write(`| CLI: command to first 4 KiB read answered (qemu-io, incl. both process starts) | ${tFirst.toFixed(3)} s |\n`);
  process.stdout.write(`| ${READS} random 4 KiB reads while restoring | ${tDuring.toFixed(3)} s |\n`);
  process.stdout.write(`| the same reads after the restore | ${tAfter.toFixed(3)} s (slowdown ${(tDuring / tAfter).toFixed(1)}x); other offsets ${tIdle.toFixed(3)} s |\n`);
  process.stdout.write(`| until fully restored in the background | ${tAll.toFixed(2)} s${tPlain === null ? '' : ` (plain restore: ${tPlain.toFixed(2)} s)`} |\n`);
}

/** A sparse 1 TiB volume, `gib` GiB written, a full backup, 64 scattered MiB changed, the incremental. */
async function bigIncremental(work: string, gib: number): Promise<void> {
  const CHANGES = 64;
  const target = join(work, 'file-target');
  mkdirSync(target);
  const s = await startServer({ args: ['--backup-target', `f=file://${target}`] });
  try {
    await snapnbd(s, ['volume', 'create', 'big', '--size', '1T']);
    // Random bytes from AES-CTR over zeros (fast, and no two blocks alike: nothing dedups).
    const tFill = await timed(() => run('bash', ['-c',
      `head -c ${gib}G /dev/zero | openssl enc -aes-256-ctr -nosalt -pbkdf2 -pass pass:bench | nbdcopy - ${s.uri('big')}`], { maxBuffer: MiB }));
    await snapnbd(s, ['snapshot', 'create', 'big@b1']);
    let full: Record<string, number | string> = {};
    const tFull = await timed(async () => { full = await snapnbd(s, ['backup', 'create', 'big@b1', '--target', 'f']); });
    const blocks = new Set<number>();
    while (blocks.size < CHANGES) blocks.add(Math.floor(Math.random() * gib * 1024));
    const cmds = [...blocks].flatMap((blk, i) => ['-c', `write -P ${i + 1} ${blk * MiB} ${MiB}`]);
    await run('qemu-io', ['-f', 'raw', ...cmds, s.uri('big')]);
    await snapnbd(s, ['snapshot', 'create', 'big@b2']);
    let inc: Record<string, number | string> = {};
    const tInc = await timed(async () => { inc = await snapnbd(s, ['backup', 'create', 'big@b2', '--target', 'f']); });
    const changed = CHANGES * MiB;
    process.stdout.write(`\n| 1 TiB sparse volume, file:// target | value |\n|---|---|\n`);
    process.stdout.write(`| ${gib} GiB written (nbdcopy) | ${tFill.toFixed(1)} s |\n`);
    process.stdout.write(`| full backup | ${tFull.toFixed(1)} s, ${full.bytesUploaded} B uploaded |\n`);
    process.stdout.write(`| incremental after ${CHANGES} MiB changed (${CHANGES} x 1 MiB, scattered) | ${tInc.toFixed(2)} s, ${inc.bytesUploaded} B uploaded ` +
      `(${(Number(inc.bytesUploaded) / changed).toFixed(2)}x the change), ${inc.bytesRead} B read |\n`);
  } finally {
    await s.stop();
    rmSync(target, { recursive: true, force: true });
  }
}

await main();
