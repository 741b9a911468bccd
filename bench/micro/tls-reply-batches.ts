// The server's CPU per reply batch on a TLS socket, in process (issue 14): a TLS socket upgraded in
// place as after STARTTLS (src/server/tls.ts), a ReplyWriter on it whose batches hold memory-budget
// bytes (as with `--memory-budget`, the default), and a client in a child process that reads and
// discards. Each turn queues K replies (a 16-byte header and PAYLOAD bytes each: 4096 for 4 KiB
// reads, 0 for writes) and releases each request's 4 KiB of budget, as the session does; the figure is this process's CPU (user + system) per batch until every byte was released.
// `--writer A.ts,B.ts` compares ReplyWriter modules (e.g. another checkout's
// src/server/reply-writer.ts), interleaved, one fresh connection per measurement.
//   node --import tsx bench/micro/tls-reply-batches.ts [--batches 20000] [--per-batch 4]
//        [--payload 4096] [--reps 5] [--writer src/server/reply-writer.ts,OTHER/src/server/reply-writer.ts]
import { fork } from 'node:child_process';
import net from 'node:net';
import { resolve } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { loadTlsMaterial, upgradeToTls } from '../../src/server/tls.ts';
import { makeTlsMaterial } from '../../test/helpers/tls-material.ts';
import { median, round } from '../lib/stats.ts';

/** Budget bytes a 4 KiB READ or WRITE holds (session.ts: the request's length). */
const REQUEST_COST = 4096;

if (process.argv[2] === 'client') {
  // Child: connect, then read and discard until the server closes.
  const [port, ca] = [Number(process.argv[3]), process.argv[4]!];
  const s = tls.connect({ port, host: '127.0.0.1', ca: (await import('node:fs')).readFileSync(ca, 'utf8'), checkServerIdentity: () => undefined });
  s.on('data', () => undefined);
  s.on('close', () => process.exit(0));
} else {
  const { values: v } = parseArgs({
    options: { batches: { type: 'string' }, 'per-batch': { type: 'string' }, payload: { type: 'string' }, reps: { type: 'string' }, writer: { type: 'string' } },
  });
  const batches = Number(v.batches ?? 20_000);
  const perBatch = Number(v['per-batch'] ?? 4);
  const payloadBytes = Number(v.payload ?? 4096);
  const reps = Number(v.reps ?? 5);
  const writers = (v.writer ?? 'src/server/reply-writer.ts').split(',').map((p) => resolve(p));
  const m = makeTlsMaterial();
  const material = loadTlsMaterial({ cert: m.serverCert, key: m.serverKey });
  const header = Buffer.alloc(16);
  const payload = Buffer.alloc(payloadBytes, 7);

  type Writer = { send(a: Buffer, b?: Buffer): boolean; release(bytes: number): void };
  type WriterClass = new (s: net.Socket | tls.TLSSocket, onFlushed: (bytes: number) => void) => Writer;

  async function once(Ctor: WriterClass): Promise<number> {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const child = fork(process.argv[1]!, ['client', String(port), m.caCert], { execArgv: ['--import', 'tsx'] });
    const raw = await new Promise<net.Socket>((r) => server.once('connection', r));
    const up = upgradeToTls(raw, material);
    await up.ready;
    const sock = up.socket;
    let outstanding = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    let sent = 0;
    const writer = new Ctor(sock, (bytes) => {
      outstanding -= bytes;
      if (outstanding > 0) return;
      // The next batch once this one has left, as replies to a client that waits for them.
      if (sent === batches) done();
      else setImmediate(turn);
    });
    const cpu0 = process.cpuUsage();
    function turn(): void {
      for (let i = 0; i < perBatch; i++) {
        if (payloadBytes > 0) writer.send(header, payload);
        else writer.send(header);
        outstanding += REQUEST_COST;
        writer.release(REQUEST_COST);
      }
      sent++;
    }
    setImmediate(turn);
    await finished;
    const cpu = process.cpuUsage(cpu0);
    sock.end();
    await new Promise((r) => child.once('exit', r));
    server.close();
    return (cpu.user + cpu.system) / batches;
  }

  const ctors = await Promise.all(writers.map(async (p) => (await import(p) as { ReplyWriter: WriterClass }).ReplyWriter));
  const got = writers.map(() => [] as number[]);
  for (let rep = 0; rep < reps; rep++) {
    const order = rep % 2 === 0 ? ctors.map((_, i) => i) : ctors.map((_, i) => i).reverse();
    for (const i of order) got[i]!.push(await once(ctors[i]!));
  }
  process.stdout.write(`| writer | µs CPU per batch of ${perBatch} × ${payloadBytes} B (median of ${reps}) | each rep |\n|---|---:|---|\n`);
  writers.forEach((w, i) => process.stdout.write(`| ${w} | ${round(median(got[i]!), 1)} | ${got[i]!.map((x) => round(x, 1)).join(', ')} |\n`));
}
