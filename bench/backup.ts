// Backup throughput against a local Ceph RGW (the test cluster of test/helpers/rgw.ts), side by
// side in one run with `aws s3 cp` of the same raw image and with restic (backup, restore, and an
// incremental after a 1 MiB change). Prints a markdown table; speeds are for ratios within a run.
//
//   node --import tsx bench/backup.ts [--size-mib 1024]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { promisify } from 'node:util';
import { startRgw } from '../test/helpers/rgw.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../test/helpers/server.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function snapnbd(s: RunningServer, args: string[]): Promise<Record<string, number | string>> {
  const r = await run(process.execPath, [SNAPNBD_BIN, ...args, '--json', '--control', s.controlPath], { maxBuffer: 64 * MiB });
  return JSON.parse(r.stdout) as Record<string, number | string>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { 'size-mib': { type: 'string' } } });
  const sizeMiB = Number(values['size-mib'] ?? 1024);
  const work = tempDir('snapnbd-bench-backup-');
  const rgw = await startRgw();
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
    const tRestore = await timed(() => snapnbd(b, ['backup', 'restore', String(full.id), 'r1', '--target', 'b']));
    const tAwsUp = await timed(() => rgw.aws(['s3', 'cp', '--only-show-errors', image, 's3://raw/image.raw']));
    const tAwsDown = await timed(() => rgw.aws(['s3', 'cp', '--only-show-errors', 's3://raw/image.raw', join(work, 'down.raw')]));
    rmSync(join(work, 'down.raw'));
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
    process.stdout.write(`${sizeMiB} MiB random image, RGW on 127.0.0.1 (memstore), one run\n\n`);
    process.stdout.write('| operation | snapnbd | aws s3 cp | restic | aws/snapnbd | restic/snapnbd |\n|---|---|---|---|---|---|\n');
    for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`);
  } finally {
    for (const s of servers) await s.stop();
    await rgw.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
