// A real S3 endpoint for backup tests: a single-node Ceph (one monitor on 127.0.0.1, one OSD on a
// memory store, no cephx, pools of size 1) and a RADOS Gateway, all under one temporary dir.
// Every daemon runs in the foreground as our child, so stop() (and the worker's exit) kills each
// one by its pid. Comes up in a few seconds here; about 0.7 GiB of memory.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './peers.ts';
import { requires } from './requires.ts';
import { tempDir } from './server.ts';

const run = promisify(execFile);

/** Fixed keys of the test user (never real credentials). */
export const RGW_ACCESS_KEY = 'SNAPNBDTESTACCESSKEY';
export const RGW_SECRET_KEY = 'snapnbd-test-secret-key-0123456789abcdef';
export const RGW_REGION = 'us-east-1';
/** Memory store size of the one OSD (the tests' default; a benchmark may ask for more). */
const MEMSTORE_BYTES = 2 * 1024 ** 3;
const READY_TIMEOUT_MS = 90_000;
const POLL_MS = 200;
const CEPH_CMD_TIMEOUT_S = 20;

export interface Rgw {
  endpoint: string;
  dir: string;
  /** Environment a client needs (AWS CLI conventions), without ~/.aws. */
  env: Record<string, string>;
  /** Runs the AWS CLI against this gateway; resolves with stdout. */
  aws(args: string[], opts?: { env?: Record<string, string> }): Promise<string>;
  /** Creates a bucket with the AWS CLI. */
  makeBucket(name: string): Promise<void>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });

function conf(dir: string, fsid: string, monPort: number, rgwPort: number, memstoreBytes: number): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
mon initial members = a
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# radosgw asks for a secure monitor session by default, which needs cephx.
ms mon client mode = crc secure
ms client mode = crc secure
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
mon max pg per osd = 1000
run dir = ${dir}/run
log file = ${dir}/log/$name.log
admin socket = ${dir}/run/$name.asok
mon data = ${dir}/mon/$name
osd data = ${dir}/osd/$name
osd objectstore = memstore
memstore device bytes = ${memstoreBytes}
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw data = ${dir}/rgw
`;
}

function daemon(cmd: string, args: string[], dir: string): ChildProcess {
  const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  live.add(p);
  let err = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => { err = (err + d).slice(-4000); });
  p.once('exit', () => live.delete(p));
  (p as ChildProcess & { lastErr: () => string }).lastErr = () => err;
  return p;
}

async function until(what: string, procs: ChildProcess[], test: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    for (const p of procs) {
      if (p.exitCode !== null || p.signalCode !== null) {
        throw new Error(`${p.spawnfile} exited (${p.exitCode ?? p.signalCode}) while waiting for ${what}: ${(p as ChildProcess & { lastErr: () => string }).lastErr()}`);
      }
    }
    if (await test().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`Ceph test cluster: ${what} not ready in ${READY_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function httpUp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: 1000 }, (res) => { res.resume(); resolve(true); });
    req.on('error', () => resolve(false));
    req.on('timeout', () => { req.destroy(); resolve(false); });
    req.end();
  });
}

/** Starts mon, OSD and gateway, creates the test user; throws naming the step that failed. */
export async function startRgw(opts: { memstoreBytes?: number } = {}): Promise<Rgw> {
  const memstoreBytes = Math.max(MEMSTORE_BYTES, opts.memstoreBytes ?? 0);
  requires('ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph', 'monmaptool', 'aws');
  const dir = tempDir('snapnbd-rgw-');
  for (const d of ['run', 'log', 'mon/mon.a', 'osd/osd.0', 'rgw']) mkdirSync(join(dir, d), { recursive: true });
  const fsid = randomUUID();
  const monPort = await freePort();
  const rgwPort = await freePort();
  const cfg = join(dir, 'ceph.conf');
  writeFileSync(cfg, conf(dir, fsid, monPort, rgwPort, memstoreBytes));
  const procs: ChildProcess[] = [];
  const ceph = async (args: string[]): Promise<string> =>
    (await run('ceph', ['-c', cfg, '--connect-timeout', String(CEPH_CMD_TIMEOUT_S), ...args], { cwd: dir })).stdout;
  const stop = async (): Promise<void> => {
    for (const p of procs.reverse()) {
      if (p.exitCode === null && p.signalCode === null) {
        p.kill('SIGKILL');
        await once(p, 'exit');
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await run('monmaptool', ['--create', '--clobber', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')]);
    await run('ceph-mon', ['-c', cfg, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')]);
    procs.push(daemon('ceph-mon', ['-c', cfg, '-i', 'a', '-f'], dir));
    await until('monitor', procs, async () => (await ceph(['mon', 'stat'])).includes('quorum'));
    const id = (await ceph(['osd', 'create'])).trim();
    if (id !== '0') throw new Error(`ceph osd create gave id '${id}', expected 0`);
    await run('ceph-osd', ['-c', cfg, '-i', '0', '--mkfs'], { cwd: dir });
    procs.push(daemon('ceph-osd', ['-c', cfg, '-i', '0', '-f'], dir));
    await until('OSD', procs, async () => /"num_up_osds":1/.test(await ceph(['osd', 'stat', '-f', 'json'])));
    procs.push(daemon('radosgw', ['-c', cfg, '-n', 'client.rgw.a', '-f'], dir));
    await until('radosgw', procs, () => httpUp(rgwPort));
    await run('radosgw-admin', ['-c', cfg, 'user', 'create', '--uid=snapnbd-test', '--display-name=snapnbd test',
      `--access-key=${RGW_ACCESS_KEY}`, `--secret-key=${RGW_SECRET_KEY}`], { cwd: dir });
  } catch (e) {
    const logs = (() => { try { return readFileSync(join(dir, 'log', 'client.rgw.a.log'), 'utf8').slice(-2000); } catch { return ''; } })();
    await stop();
    throw new Error(`cannot start the Ceph test cluster: ${(e as Error).message}${logs ? `\nradosgw log tail:\n${logs}` : ''}`);
  }
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const env = {
    AWS_ENDPOINT_URL: endpoint,
    AWS_ACCESS_KEY_ID: RGW_ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY: RGW_SECRET_KEY,
    AWS_REGION: RGW_REGION,
    AWS_DEFAULT_REGION: RGW_REGION,
    // Keep the tester's own ~/.aws out of it.
    AWS_CONFIG_FILE: join(dir, 'aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(dir, 'aws-credentials'),
  };
  const aws = async (args: string[], opts: { env?: Record<string, string> } = {}): Promise<string> => {
    const r = await run('aws', ['--endpoint-url', endpoint, ...args], {
      env: { ...process.env, ...env, ...opts.env }, maxBuffer: 64 * 1024 * 1024,
    });
    return r.stdout;
  };
  return {
    endpoint, dir, env, aws, stop,
    makeBucket: async (name) => { await aws(['s3api', 'create-bucket', '--bucket', name]); },
  };
}
