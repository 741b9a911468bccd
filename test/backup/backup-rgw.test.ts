// (Longer than most files: every test here shares one RGW, which takes 15-30 s to start.)
// Backups end to end against a real Ceph RGW: the real server and CLI, a second server with its
// own data dir restoring byte for byte (nbdcopy + cmp), incrementals that upload only what
// changed, a chain of ten with the middle ones deleted and pruned, a clone sharing its origin's
// blocks, the AWS CLI as the independent reader, corrupted and deleted objects, kill -9 in the
// middle of a backup, wrong credentials and a missing bucket. Server A reaches RGW through a
// fault proxy (passing everything unless told otherwise).
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { requires } from '../helpers/requires.ts';
import { startRgw, type Rgw } from '../helpers/rgw.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const BUCKET = 'snapnbd-backups';
const PREFIX = 'site1';
const VOLUME_SIZE = 64 * MiB;

let rgw: Rgw;
let proxy: FaultProxy;
let a: RunningServer;
let b: RunningServer;
let work: string;
const dataA = tempDir('snapnbd-bk-a-');
const dataB = tempDir('snapnbd-bk-b-');

interface CliResult { code: number; stdout: string; stderr: string }

async function cli(server: RunningServer, args: string[]): Promise<CliResult> {
  try {
    const r = await run(process.execPath, [SNAPNBD_BIN, ...args, '--control', server.controlPath], { maxBuffer: 16 * MiB });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

async function ok<T = unknown>(server: RunningServer, args: string[]): Promise<T> {
  const r = await cli(server, [...args, '--json']);
  if (r.code !== 0) throw new Error(`snapnbd ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface Result { id: string; bytesRead: number; bytesUploaded: number; blocksUploaded: number; blocksReused: number; base: string | null }

function serverArgs(target: string): string[] {
  return ['--backup-target', `off=${target}`];
}

async function startA(): Promise<RunningServer> {
  return startServer({ dataDir: dataA, args: [...serverArgs(`s3://${BUCKET}/${PREFIX}`), '--volume', `vm=${VOLUME_SIZE}`], env: { ...rgw.env, AWS_ENDPOINT_URL: proxy.endpoint } });
}

/** Writes `data` at `offset` of an export through nbdcopy (from a scratch file). */
async function writeAt(server: RunningServer, exportName: string, offset: number, data: Buffer): Promise<void> {
  const f = join(work, `w-${randomBytes(4).toString('hex')}`);
  const fd = openSync(f, 'w');
  writeSync(fd, data);
  closeSync(fd);
  // qemu-io's write -s takes the bytes from a file.
  await run('qemu-io', ['-f', 'raw', '-c', `write -s ${f} ${offset} ${data.length}`, server.uri(exportName)]);
  rmSync(f);
}

async function image(server: RunningServer, exportName: string): Promise<Buffer> {
  const f = join(work, `img-${randomBytes(4).toString('hex')}`);
  await run('nbdcopy', [server.uri(exportName), f]);
  const data = readFileSync(f);
  rmSync(f);
  return data;
}

async function sameImage(x: RunningServer, xe: string, y: RunningServer, ye: string): Promise<void> {
  const fx = join(work, 'x.img');
  const fy = join(work, 'y.img');
  await run('nbdcopy', [x.uri(xe), fx]);
  await run('nbdcopy', [y.uri(ye), fy]);
  await run('cmp', [fx, fy]); // throws naming the first differing byte
  rmSync(fx);
  rmSync(fy);
}

beforeAll(async () => {
  requires('nbdcopy', 'qemu-io', 'cmp');
  work = tempDir('snapnbd-bk-work-');
  rgw = await startRgw();
  await rgw.makeBucket(BUCKET);
  proxy = await startFaultProxy(rgw.endpoint);
  a = await startA();
  b = await startServer({ dataDir: dataB, args: serverArgs(`s3://${BUCKET}/${PREFIX}`), env: rgw.env });
}, 180_000);

afterAll(async () => {
  await a?.stop();
  await b?.stop();
  await proxy?.close();
  await rgw?.stop();
  for (const d of [dataA, dataB, work]) if (d) rmSync(d, { recursive: true, force: true });
});

describe('backups to Ceph RGW', () => {
  let full: Result;
  let incremental: Result;
  let survivor: Result;

  it('a full backup uploads every allocated block, and the AWS CLI sees exactly them and the manifest', async () => {
    await writeAt(a, 'vm', 0, randomBytes(5 * MiB));
    await writeAt(a, 'vm', 40 * MiB, randomBytes(3 * MiB));
    await ok(a, ['snapshot', 'create', 'vm@s1']);
    full = await ok<Result>(a, ['backup', 'create', 'vm@s1', '--target', 'off']);
    expect(full.blocksUploaded).toBe(8);
    expect(full.bytesUploaded).toBe(8 * MiB);
    expect(full.base).toBeNull();
    const listing = await rgw.aws(['s3', 'ls', '--recursive', `s3://${BUCKET}/${PREFIX}/`]);
    expect(listing.split('\n').filter((l) => l.includes(`${PREFIX}/blocks/`)).length).toBe(8);
    const manifest = join(work, 'manifest.gz');
    await rgw.aws(['s3', 'cp', '--only-show-errors', `s3://${BUCKET}/${PREFIX}/manifests/${full.id}`, manifest]);
    const m = JSON.parse(gunzipSync(readFileSync(manifest)).toString()) as { id: string; volume: string; snapshot: string; size: number };
    expect(m).toMatchObject({ id: full.id, volume: 'vm', snapshot: 's1', size: VOLUME_SIZE });
    const snaps = await ok<{ snapshots: { name: string; backup?: string }[] }>(a, ['snapshot', 'list', 'vm']);
    expect(snaps.snapshots.find((s) => s.name === 's1')?.backup).toBe('backed-up');
  });

  it('an incremental after a 1 MiB change reads and uploads at most 2 MiB', async () => {
    await writeAt(a, 'vm', 2 * MiB + 512 * 1024, randomBytes(MiB)); // straddles blocks 2 and 3
    await ok(a, ['snapshot', 'create', 'vm@s2']);
    incremental = await ok<Result>(a, ['backup', 'create', 'vm@s2', '--target', 'off']);
    expect(incremental.base).toBe(full.id);
    expect(incremental.bytesRead).toBeLessThanOrEqual(2 * MiB);
    expect(incremental.bytesUploaded).toBeLessThanOrEqual(2 * MiB);
    expect(incremental.blocksReused).toBe(6);
  });

  it('a second server with its own data dir restores both, byte for byte', async () => {
    await ok(b, ['backup', 'restore', full.id, 'r-full', '--target', 'off']);
    await ok(b, ['backup', 'restore', incremental.id, 'r-inc', '--target', 'off']);
    await sameImage(a, 'vm@s1', b, 'r-full');
    await sameImage(a, 'vm@s2', b, 'r-inc');
    const list = await ok<{ id: string; state: string; source: string }[]>(b, ['backup', 'list', 'vm', '--target', 'off']);
    expect(list.map((x) => [x.id, x.state])).toEqual([[full.id, 'backed-up'], [incremental.id, 'backed-up']]);
  });

  it('a clone backs up sharing its origin\'s blocks', async () => {
    await ok(a, ['clone', 'vm@s1', 'c1']);
    await writeAt(a, 'c1', 10 * MiB, randomBytes(MiB));
    await ok(a, ['snapshot', 'create', 'c1@x']);
    const r = await ok<Result>(a, ['backup', 'create', 'c1@x', '--target', 'off']);
    expect(r.blocksUploaded).toBe(1);
    expect(r.blocksReused).toBe(8);
    await ok(b, ['backup', 'restore', r.id, 'r-clone', '--target', 'off']);
    await sameImage(a, 'c1@x', b, 'r-clone');
  });

  it('a chain of 10 incrementals, the middle ones deleted and pruned: every remaining one restores exactly', async () => {
    const chain: { snap: string; id: string }[] = [];
    for (let i = 0; i < 10; i++) {
      await writeAt(a, 'vm', 50 * MiB, randomBytes(MiB)); // each version of block 50 is named only by its backup
      await ok(a, ['snapshot', 'create', `vm@c${i}`]);
      const r = await ok<Result>(a, ['backup', 'create', `vm@c${i}`, '--target', 'off']);
      expect(r.bytesUploaded).toBeLessThanOrEqual(2 * MiB);
      chain.push({ snap: `c${i}`, id: r.id });
    }
    for (const c of chain.slice(3, 7)) await ok(a, ['backup', 'delete', c.id, '--target', 'off']);
    const dry = await ok<{ deleted: string[] }>(a, ['backup', 'prune', 'vm', '--target', 'off', '--keep-last', '4', '--grace', '0', '--dry-run']);
    const pruned = await ok<{ deleted: string[]; kept: string[]; gc: { skipped: string | null; blocksDeleted: number } }>(
      a, ['backup', 'prune', 'vm', '--target', 'off', '--keep-last', '4', '--grace', '0']);
    expect(pruned.deleted).toEqual(dry.deleted);
    expect(pruned.kept).toEqual([chain[7]!.id, chain[8]!.id, chain[9]!.id, chain[2]!.id].sort());
    expect(pruned.gc.skipped).toBeNull();
    expect(pruned.gc.blocksDeleted).toBe(6); // block 50 as c0, c1, c3, c4, c5 and c6 had it
    for (const c of [chain[2]!, chain[7]!, chain[8]!, chain[9]!]) {
      await ok(b, ['backup', 'restore', c.id, `r-${c.snap}`, '--target', 'off']);
      await sameImage(a, `vm@${c.snap}`, b, `r-${c.snap}`);
    }
    const verify = await ok<{ ok: boolean }>(b, ['backup', 'verify', '--target', 'off']);
    expect(verify.ok).toBe(true);
  });

  it('a snapshot being backed up cannot be deleted until the backup is cancelled', async () => {
    proxy.inject('stall', 1, (m, u) => m === 'PUT' && u.includes('/blocks/'));
    await writeAt(a, 'vm', 60 * MiB, randomBytes(2 * MiB));
    await ok(a, ['snapshot', 'create', 'vm@busy']);
    const job = await ok<{ id: string }>(a, ['backup', 'create', 'vm@busy', '--target', 'off', '--detach']);
    const del = await cli(a, ['snapshot', 'delete', 'vm@busy']);
    expect(del.code).toBe(1);
    expect(del.stderr).toMatch(/SNAPSHOT_BUSY/);
    await ok(a, ['backup', 'cancel', job.id]);
    for (let i = 0; i < 100; i++) {
      const j = await ok<{ jobs: { id: string; state: string }[] }>(a, ['backup', 'jobs']);
      if (j.jobs.find((x) => x.id === job.id)?.state !== 'running') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await ok(a, ['snapshot', 'delete', 'vm@busy']);
  });

  it('kill -9 in the middle of a backup: no listing shows it backed up; the retry uploads only what is missing', async () => {
    await ok(a, ['volume', 'create', 'kv', '--size', '16M']);
    await writeAt(a, 'kv', 2 * MiB, randomBytes(12 * MiB)); // 12 new blocks, nowhere on the target yet
    await ok(a, ['snapshot', 'create', 'kv@k']);
    let blockPuts = 0;
    // Let 4 block uploads through, then hold every later one.
    proxy.inject('stall', 1000, (m, u) => m === 'PUT' && u.includes('/blocks/') && ++blockPuts > 4);
    await ok(a, ['backup', 'create', 'kv@k', '--target', 'off', '--detach']);
    for (let i = 0; i < 200 && blockPuts <= 8; i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 1000)); // the 4 let through finish
    await a.kill();
    proxy.clear();
    const seen = await ok<{ snapshot: string; state: string }[]>(b, ['backup', 'list', 'kv', '--target', 'off']);
    expect(seen.map((x) => x.state)).toEqual(['backing-up']); // its marker, never 'backed-up'
    a = await startA();
    // After the restart the server learns from the target which snapshots are backed up.
    let state: string | undefined;
    for (let i = 0; i < 50 && state !== 'backed-up'; i++) {
      const l = await ok<{ snapshots: { name: string; backup?: string }[] }>(a, ['snapshot', 'list', 'vm']);
      state = l.snapshots.find((x) => x.name === 'c9')?.backup;
      if (state !== 'backed-up') await new Promise((r) => setTimeout(r, 200));
    }
    expect(state).toBe('backed-up');
    const retry = await ok<Result>(a, ['backup', 'create', 'kv@k', '--target', 'off']);
    expect(retry.blocksUploaded).toBe(12 - 4);
    expect(retry.blocksReused).toBe(4);
    survivor = retry;
    await ok(b, ['backup', 'restore', retry.id, 'r-k', '--target', 'off']);
    await sameImage(a, 'kv@k', b, 'r-k');
  });

  it('a corrupted and a deleted object: verify names both; a restore fails cleanly and leaves no volume', async () => {
    // Two blocks a live backup names (the target also holds unnamed ones the cancelled backup left).
    const manifest = join(work, 'manifest-kv.gz');
    await rgw.aws(['s3', 'cp', '--only-show-errors', `s3://${BUCKET}/${PREFIX}/manifests/${survivor.id}`, manifest]);
    const names = (JSON.parse(gunzipSync(readFileSync(manifest)).toString()) as { blocks: (string | number)[] }).blocks
      .filter((x): x is string => typeof x === 'string');
    const key = (n: string): string => `${PREFIX}/blocks/${n.slice(0, 2)}/${n}`;
    const [victim, gone] = [key(names[0]!), key(names[1]!)];
    const junk = join(work, 'junk');
    const fd = openSync(junk, 'w');
    writeSync(fd, randomBytes(MiB));
    closeSync(fd);
    await rgw.aws(['s3', 'cp', '--only-show-errors', junk, `s3://${BUCKET}/${victim}`]);
    await rgw.aws(['s3', 'rm', '--only-show-errors', `s3://${BUCKET}/${gone}`]);
    const v = await cli(b, ['backup', 'verify', '--target', 'off']);
    expect(v.code).toBe(1);
    expect(v.stdout).toContain(`corrupt: ${victim.slice(PREFIX.length + 1)}`);
    expect(v.stdout).toContain(`missing: ${gone.slice(PREFIX.length + 1)}`);
    const affected = /corrupt: \S+ \(backups ([^)]+)\)/.exec(v.stdout)![1]!.split(', ');
    const r = await cli(b, ['backup', 'restore', affected[0]!, 'r-bad', '--target', 'off']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/BACKUP_CORRUPT: block \d+ \(offset \d+\) of backup \S+: object blocks\/\S+ (does not match its hash|is missing)/);
    const vols = await ok<{ volumes: { name: string }[] }>(b, ['volume', 'list']);
    expect(vols.volumes.map((x) => x.name)).not.toContain('r-bad');
  });

  it('wrong credentials and a missing bucket are named, never the secret', async () => {
    const secret = 'definitely-wrong-secret';
    const c = await startServer({
      args: [...serverArgs(`s3://${BUCKET}/${PREFIX}`), '--backup-target', 'nobucket=s3://no-such-bucket/x', '--volume', 'v=4M'],
      env: { ...rgw.env, AWS_SECRET_ACCESS_KEY: secret },
    });
    try {
      await ok(c, ['snapshot', 'create', 'v@s']);
      const denied = await cli(c, ['backup', 'create', 'v@s', '--target', 'off']);
      expect(denied.code).toBe(1);
      expect(denied.stderr).toMatch(new RegExp(`TARGET_DENIED: access to bucket '${BUCKET}' at ${rgw.endpoint} denied`));
      expect(denied.stderr + c.stderr()).not.toContain(secret);
      const missing = await cli(c, ['backup', 'list', '--target', 'nobucket']);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/TARGET_(NOT_FOUND|DENIED): .*bucket 'no-such-bucket'/);
    } finally {
      await c.stop();
    }
  });
});

// Instant restore and restore faults, on server A (through the proxy, whose `delay` makes RGW slow
// enough to act while a restore runs). Each MiB of the source holds one pattern byte, so qemu-io
// can check any offset with `read -P`.
describe('instant restore and restore faults against RGW', () => {
  const IV_BLOCKS = 24;
  /** The store keeps about 36 MiB free for its metadata: this leaves room for less than the 24 MiB restored. */
  const FULL_DISK_MIB = 52;
  const patternOf = (block: number): number => 0x10 + block;
  let ivId: string;
  let ivImage: Buffer;
  /** Block k's object name (the target is not encrypted: the SHA-256 of its bytes). */
  const nameOf = (k: number): string => createHash('sha256').update(Buffer.alloc(MiB, patternOf(k))).digest('hex');
  const SLOW = [4, 5, 6, 7, 8, 9, 10, 11];
  /** RGW holds blocks 4-11 until release(): the background restore's workers (8, in block order)
   *  all wait on them, so later blocks stay unrestored until the test lets them go. */
  const slowBlocks = (): void => {
    const names = SLOW.map(nameOf);
    proxy.inject('hold', 10_000, (m, u) => m === 'GET' && names.some((n) => u.includes(n)));
  };
  const releaseAll = (): void => {
    proxy.clear();
    proxy.release();
  };
  /** Everything else a little late, so a restart finds work left. */
  const slowRest = (): void => proxy.inject('delay', 10_000, (m, u) => m === 'GET' && u.includes('/blocks/'), 2000);

  /** qemu-io commands on an export; throws when a `read -P` finds another pattern. */
  async function qemuIo(server: RunningServer, exportName: string, cmds: string[]): Promise<void> {
    const r = await run('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), server.uri(exportName)]);
    if (/Pattern verification failed|error|fail/i.test(r.stdout + r.stderr)) throw new Error(`qemu-io ${cmds.join('; ')}: ${r.stdout}${r.stderr}`);
  }

  async function volume(server: RunningServer, name: string): Promise<{ state: string; restore?: { percent: number } } | undefined> {
    const l = await ok<{ volumes: { name: string; state: string; restore?: { percent: number } }[] }>(server, ['volume', 'list']);
    return l.volumes.find((v) => v.name === name);
  }

  async function untilReady(server: RunningServer, name: string): Promise<void> {
    for (let i = 0; i < 300; i++) {
      if ((await volume(server, name))?.state === 'ready') return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`volume ${name} never became ready: ${JSON.stringify(await volume(server, name))}`);
  }

  beforeAll(async () => {
    await ok(a, ['volume', 'create', 'iv', '--size', '32M']);
    const cmds: string[] = [];
    for (let k = 0; k < IV_BLOCKS; k++) cmds.push(`write -P ${patternOf(k)} ${k * MiB} ${MiB}`);
    await qemuIo(a, 'iv', cmds);
    await ok(a, ['snapshot', 'create', 'iv@src']);
    ivId = (await ok<Result>(a, ['backup', 'create', 'iv@src', '--target', 'off'])).id;
    ivImage = await image(a, 'iv@src');
  }, 120_000);

  it('--instant: usable at once, reads answered while restoring, writes survive, then byte for byte', async () => {
    slowBlocks();
    const job = await ok<{ id: string; state: string }>(a, ['backup', 'restore', ivId, 'ir', '--target', 'off', '--instant']);
    expect(job.state).toBe('running');
    const v = await volume(a, 'ir');
    expect(v?.state).toBe('restoring');
    expect(v?.restore?.percent).toBeLessThan(100);
    const human = await cli(a, ['volume', 'list']);
    expect(human.stdout).toMatch(/ir .* restoring \d+%/);
    // Blocks far apart (most not restored yet), one straddling two blocks, and the zero tail.
    await qemuIo(a, 'ir', [
      `read -P ${patternOf(17)} ${17 * MiB + 4096} 4096`,
      `read -P ${patternOf(3)} ${3 * MiB} ${MiB}`,
      `read -P ${patternOf(22)} ${23 * MiB - 4096} 4096`,
      `read -P ${patternOf(23)} ${23 * MiB} 4096`,
      `read -P 0 ${30 * MiB} 65536`,
    ]);
    // Writes while restoring: a partial one into a block not fetched yet, and a whole block.
    await qemuIo(a, 'ir', [`write -P 238 ${20 * MiB + 8192} 4096`, `write -P 221 ${14 * MiB} ${MiB}`]);
    expect((await volume(a, 'ir'))?.state).toBe('restoring');
    releaseAll();
    await untilReady(a, 'ir');
    const expected = Buffer.from(ivImage);
    expected.fill(238, 20 * MiB + 8192, 20 * MiB + 12288);
    expected.fill(221, 14 * MiB, 15 * MiB);
    const got = await image(a, 'ir');
    expect(got.equals(expected)).toBe(true);
  });

  it('kill -9 in the middle of an instant restore: the restart resumes it and it completes exactly', async () => {
    slowBlocks();
    await ok(a, ['backup', 'restore', ivId, 'ir2', '--target', 'off', '--instant']);
    await qemuIo(a, 'ir2', [`write -P 204 ${15 * MiB + 512} 1024`, `read -P ${patternOf(13)} ${13 * MiB} 4096`]);
    await new Promise((r) => setTimeout(r, 2000)); // some blocks restored, most not
    const before = (await volume(a, 'ir2'))?.restore?.percent ?? 100;
    expect(before).toBeLessThan(100);
    await a.kill();
    releaseAll();
    slowRest();
    a = await startA();
    expect(a.stderr()).not.toMatch(/cannot read/);
    expect((await volume(a, 'ir2'))?.state).toBe('restoring');
    // Served again at once, before the resumed restore ends: reads of any block are right.
    await qemuIo(a, 'ir2', [`read -P ${patternOf(21)} ${21 * MiB} 4096`, `read -P 204 ${15 * MiB + 512} 1024`]);
    await untilReady(a, 'ir2');
    proxy.clear();
    const expected = Buffer.from(ivImage);
    expected.fill(204, 15 * MiB + 512, 15 * MiB + 1536);
    expect((await image(a, 'ir2')).equals(expected)).toBe(true);
  });

  it('kill -9 in the middle of a plain restore: the half-made volume is gone after the restart; a retry restores exactly', async () => {
    slowBlocks();
    await ok(a, ['backup', 'restore', ivId, 'pr', '--target', 'off', '--detach']);
    for (let i = 0; i < 50 && !(await volume(a, 'pr')); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await volume(a, 'pr')).toBeDefined();
    await new Promise((r) => setTimeout(r, 2000));
    await a.kill();
    releaseAll();
    a = await startA();
    for (let i = 0; i < 50 && (await volume(a, 'pr')); i++) await new Promise((r) => setTimeout(r, 100));
    expect(await volume(a, 'pr')).toBeUndefined();
    expect(a.stderr()).toMatch(/restore of backup \S+ into 'pr' was interrupted; removing the half-restored volume/);
    await ok(a, ['backup', 'restore', ivId, 'pr', '--target', 'off']);
    expect((await image(a, 'pr')).equals(ivImage)).toBe(true);
  });

  it('a full local disk during a restore: NO_SPACE said plainly, no volume left, the server keeps serving', async () => {
    requires('mount', 'umount');
    const mnt = tempDir('snapnbd-bk-full-');
    await run('mount', ['-t', 'tmpfs', '-o', `size=${FULL_DISK_MIB}m`, 'tmpfs', mnt]);
    let c: RunningServer | undefined;
    try {
      c = await startServer({ dataDir: mnt, args: [...serverArgs(`s3://${BUCKET}/${PREFIX}`), '--volume', 'small=1M'], env: rgw.env });
      await writeAt(c, 'small', 0, Buffer.alloc(4096, 7));
      const r = await cli(c, ['backup', 'restore', ivId, 'big', '--target', 'off']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/NO_SPACE: restore into 'big' stopped: the local disk is full .*the partial volume was removed/);
      const vols = await ok<{ volumes: { name: string }[] }>(c, ['volume', 'list']);
      expect(vols.volumes.map((x) => x.name)).toEqual(['small']);
      expect((await image(c, 'small')).subarray(0, 4096).equals(Buffer.alloc(4096, 7))).toBe(true);
      await writeAt(c, 'small', 4096, Buffer.alloc(4096, 8)); // space came back with the volume
    } finally {
      await c?.stop();
      await run('umount', [mnt]).catch(() => undefined);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});
