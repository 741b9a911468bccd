// The server's CPU per request on its TLS receive path, in process (issue 14): a real NbdServer
// (listener, session, STARTTLS upgrade, decoder, dispatch, reply writer) in front of a device that
// does nothing, so the figure is the network and protocol layers' alone, and a client in a child
// process that, like libnbd through GnuTLS (the bench's bridge), sends every request header and
// every payload as TLS records of their own: it waits for each write's callback before the next
// write, so Node's TLS socket never joins two writes into one record (a 1 MiB payload leaves as
// 64 records of 16 KiB). Up to QD requests are outstanding; the figure is this process's CPU
// (user + system) per request from the first request to the last reply.
// `--server A/src/server/listener.ts,B/src/server/listener.ts` compares builds (e.g. another
// checkout's), interleaved, one fresh server and connection per measurement.
//   node --import tsx bench/micro/tls-receive.ts [--workload write-4k|read-4k|write-1m]
//        [--requests 20000] [--qd 32] [--reps 5] [--server src/server/listener.ts,OTHER/src/server/listener.ts]
import { fork } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import type { BlockDevice } from '../../src/storage/device.ts';
import { makeTlsMaterial } from '../../test/helpers/tls-material.ts';
import { median, round } from '../lib/stats.ts';

const EXPORT = 'null';
const DEVICE_BYTES = 2 ** 30;
const WORKLOADS = { 'write-4k': { write: true, bytes: 4096 }, 'read-4k': { write: false, bytes: 4096 }, 'write-1m': { write: true, bytes: 2 ** 20 } } as const;
type Workload = keyof typeof WORKLOADS;

/** Answers every request at once: what is measured is everything before and after it. */
const nullDevice: BlockDevice = {
  size: DEVICE_BYTES, readOnly: false, preferredBlockSize: 4096, multiConn: true,
  read: () => Promise.resolve(), write: () => Promise.resolve(), writeGather: () => Promise.resolve(),
  trim: () => Promise.resolve(), zero: () => Promise.resolve(), flush: () => Promise.resolve(), cache: () => Promise.resolve(),
  extents: (_o, length) => Promise.resolve([{ length, hole: false, zero: false }]),
};

if (process.argv[2] === 'client') {
  const [port, ca, workload, requests, qd] = [Number(process.argv[3]), process.argv[4]!, process.argv[5] as Workload, Number(process.argv[6]), Number(process.argv[7])];
  await runClient(port, ca, WORKLOADS[workload], requests, qd);
  process.exit(0);
} else {
  const { values: v } = parseArgs({
    options: { workload: { type: 'string' }, requests: { type: 'string' }, qd: { type: 'string' }, reps: { type: 'string' }, server: { type: 'string' } },
  });
  const workload = (v.workload ?? 'write-4k') as Workload;
  if (!(workload in WORKLOADS)) throw new Error(`--workload: ${Object.keys(WORKLOADS).join(', ')}`);
  const requests = Number(v.requests ?? (workload === 'write-1m' ? 2048 : 20_000));
  const qd = Number(v.qd ?? (workload === 'write-1m' ? 8 : 32));
  const reps = Number(v.reps ?? 5);
  const servers = (v.server ?? 'src/server/listener.ts').split(',').map((p) => resolve(p));
  const m = makeTlsMaterial();
  process.on('exit', () => rmSync(m.root, { recursive: true, force: true }));

  type Mods = { NbdServer: typeof import('../../src/server/listener.ts').NbdServer; StaticExports: typeof import('../../src/server/static-exports.ts').StaticExports; loadTlsMaterial: typeof import('../../src/server/tls.ts').loadTlsMaterial };
  const builds: Mods[] = await Promise.all(servers.map(async (p) => ({
    NbdServer: (await import(p)).NbdServer,
    StaticExports: (await import(join(dirname(p), 'static-exports.ts'))).StaticExports,
    loadTlsMaterial: (await import(join(dirname(p), 'tls.ts'))).loadTlsMaterial,
  })));

  async function once(b: Mods): Promise<number> {
    const material = b.loadTlsMaterial({ cert: m.serverCert, key: m.serverKey });
    const server = new b.NbdServer({
      exports: new b.StaticExports(EXPORT).add(EXPORT, nullDevice),
      maxConnections: 0,
      memoryBudget: 512 * 2 ** 20,
      tls: () => ({ mode: 'require', material, exportNeedsTls: () => true }),
    });
    const addr = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
    if (addr.kind !== 'tcp') throw new Error('not tcp');
    const child = fork(process.argv[1]!, ['client', String(addr.port), m.caCert, workload, String(requests), String(qd)], { execArgv: ['--import', 'tsx'] });
    let cpu0: NodeJS.CpuUsage | null = null;
    let cpu: NodeJS.CpuUsage | null = null;
    child.on('message', (msg) => {
      if (msg === 'start') cpu0 = process.cpuUsage();
      else if (msg === 'done' && cpu0) cpu = process.cpuUsage(cpu0);
    });
    const code = await new Promise((r) => child.once('exit', r));
    await server.stop();
    if (code !== 0 || !cpu) throw new Error(`client exited ${String(code)}`);
    const c = cpu as NodeJS.CpuUsage;
    return (c.user + c.system) / requests;
  }

  const got = servers.map(() => [] as number[]);
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? builds.map((_, i) => i) : builds.map((_, i) => i).reverse();
    for (const i of order) got[i]!.push(await once(builds[i]!));
  }
  process.stdout.write(`| server | ${workload}: µs CPU per request, QD ${qd}, ${requests} requests (median of ${reps}) | each rep |\n|---|---:|---|\n`);
  servers.forEach((s, i) => process.stdout.write(`| ${s} | ${round(median(got[i]!), 1)} | ${got[i]!.map((x) => round(x, 1)).join(', ')} |\n`));
}

/** Plain handshake, STARTTLS, TLS, GO; then the requests, each header and payload its own record(s). */
async function runClient(port: number, ca: string, w: { write: boolean; bytes: number }, requests: number, qd: number): Promise<void> {
  const raw = net.connect(port, '127.0.0.1');
  raw.setNoDelay(true);
  const plain = reader(raw);
  await plain.read(18); // greeting
  raw.write(u32(3)); // FIXED_NEWSTYLE | NO_ZEROES
  raw.write(option(5, Buffer.alloc(0))); // STARTTLS
  const ack = await plain.read(20);
  if (ack.readUInt32BE(12) !== 1) throw new Error('STARTTLS refused');
  plain.stop();
  const s = tls.connect({ socket: raw, ca: readFileSync(ca, 'utf8'), checkServerIdentity: () => undefined });
  await new Promise<void>((r, j) => { s.once('secureConnect', r); s.once('error', j); });
  const r = reader(s);
  const name = Buffer.from(EXPORT);
  s.write(option(7, Buffer.concat([u32(name.length), name, Buffer.alloc(2)]))); // GO, no info requests
  for (;;) {
    const h = await r.read(20);
    await r.read(h.readUInt32BE(16));
    const type = h.readUInt32BE(12);
    if (type === 1) break;
    if (type !== 3) throw new Error(`GO refused: ${type}`);
  }
  const payload = Buffer.alloc(w.bytes, 0x5a);
  const replyBytes = 16 + (w.write ? 0 : w.bytes);
  const write = (b: Buffer): Promise<void> => new Promise((res) => s.write(b, () => res()));
  let answered = 0;
  let wake: (() => void) | null = null;
  s.removeAllListeners('data');
  let pending = 0;
  s.on('data', (d: Buffer) => {
    pending += d.length;
    const n = Math.floor(pending / replyBytes);
    pending -= n * replyBytes;
    answered += n;
    wake?.();
  });
  process.send!('start');
  for (let i = 0; i < requests; i++) {
    while (i - answered >= qd) await new Promise<void>((res) => (wake = res));
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(w.write ? 1 : 0, 6);
    h.writeUInt32BE(i, 12);
    h.writeUInt32BE(((i * 7919) % (DEVICE_BYTES / w.bytes)) * w.bytes, 20); // offset < 2^32
    h.writeUInt32BE(w.bytes, 24);
    await write(h);
    if (w.write) await write(payload);
  }
  while (answered < requests) await new Promise<void>((res) => (wake = res));
  process.send!('done');
  s.end();
  await new Promise((res) => s.once('close', res));
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

function option(opt: number, data: Buffer): Buffer {
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 0, 'latin1');
  h.writeUInt32BE(opt, 8);
  h.writeUInt32BE(data.length, 12);
  return Buffer.concat([h, data]);
}

/** Exactly-n reads over a stream's 'data' events. */
function reader(s: net.Socket | tls.TLSSocket): { read(n: number): Promise<Buffer>; stop(): void } {
  let buf = Buffer.alloc(0);
  let wake: (() => void) | null = null;
  const onData = (d: Buffer): void => { buf = Buffer.concat([buf, d]); wake?.(); };
  s.on('data', onData);
  return {
    async read(n) {
      while (buf.length < n) await new Promise<void>((r) => (wake = r));
      const out = buf.subarray(0, n);
      buf = buf.subarray(n);
      return out;
    },
    stop() { s.off('data', onData); s.pause(); },
  };
}
