// How fast can any Node server serve seqread-1m and seqwrite-1m? A minimal NBD server (this file,
// run as `serve`: handshake, READ, WRITE, FLUSH and DISC, nothing else: no engine, no map, no
// checks) beside nbdkit and snapnbd under the harness's workload of that name (fio
// --ioengine=nbd, 1 MiB at QD 8, page cache hot), interleaved rep by rep. The minimal server runs
// in two ways:
//   loop: pread / pwritev synchronously on the event loop (for reads, the thread that reads is
//         the thread that sends, as in nbdkit; for writes, what snapnbd does up to 1 MiB);
//   pool: the same in libuv's thread pool (what snapnbd does for 1 MiB reads).
// It writes the replies of one socket read in one writev (cork/uncork), reads into buffers reused
// once their reply is written, and writes payloads as the socket delivered them (no joining).
// If the floor is near nbdkit, the gap to snapnbd is snapnbd's own work; if it is near snapnbd,
// it is Node's one thread per socket.
// Run: node --import tsx bench/micro/seq-floor.ts [--workload seqread-1m|seqwrite-1m] [--seconds 8]
//        [--reps 3] [--servers nbdkit-file,floor-loop,floor-pool,snapnbd] (nbdkit-cow too)
import { closeSync, fdatasync, fstatSync, mkdtempSync, openSync, read, readSync, rmSync, writev, writevSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ClientFlag, Cmd, HandshakeFlag, Info, Opt, Rep, TxFlag, CLIENT_FLAGS_LEN, MAX_REQUEST, OPTION_HEADER_LEN, REQUEST_HEADER_LEN } from '../../src/protocol/constants.ts';
import { decodeOptionHeader, encodeExportNameReply, encodeGreeting, encodeInfo, encodeOptionReply } from '../../src/protocol/handshake.ts';
import { decodeRequestHeader, encodeSimpleReply } from '../../src/protocol/transmission.ts';
import { fioTimeBased, runFio } from '../lib/clients.ts';
import { createImage } from '../lib/image.ts';
import { processTimes, warm, writeBack } from '../lib/machine.ts';
import { WORKLOADS, type PeerName } from '../lib/config.ts';
import { exportNameOf, SNAPNBD_BIN, startPeer, writableCopy, type BenchContext } from '../lib/peers.ts';
import { installExitHandlers, spawnTracked, waitLine } from '../lib/procs.ts';
import { median } from '../lib/stats.ts';

const IMAGE_BYTES = 2 ** 30;
const FLOOR_MODES = ['loop', 'pool'] as const;
type FloorMode = (typeof FLOOR_MODES)[number];

/** Bytes received and not yet parsed, as the socket delivered them (no joining of payloads). */
class Received {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void { this.chunks.push(b); this.length += b.length; }
  /** The first `n` (≤ length) bytes as views of the chunks, consumed. */
  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    while (n > 0) {
      const c = this.chunks[0]!;
      if (c.length <= n) { out.push(c); this.chunks.shift(); n -= c.length; this.length -= c.length; continue; }
      out.push(c.subarray(0, n));
      this.chunks[0] = c.subarray(n);
      this.length -= n;
      n = 0;
    }
    return out;
  }
  /** The first `n` bytes as one buffer (a header), consumed. */
  takeJoined(n: number): Buffer {
    const parts = this.take(n);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
  /** The first `n` bytes, not consumed. */
  peek(n: number): Buffer {
    const c = this.chunks[0]!;
    return c.length >= n ? c : Buffer.concat(this.chunks, n);
  }
}

/** The minimal server: one connection at a time is all fio needs, but any number work. */
function serve(mode: FloorMode, image: string, writable: boolean): void {
  const fd = openSync(image, writable ? 'r+' : 'r');
  const TX_FLAGS = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | (writable ? 0 : TxFlag.READ_ONLY);
  const size = fstatSync(fd).size;
  const srv = net.createServer((sock) => {
    sock.setNoDelay(true);
    const free: Buffer[] = [];
    const rx = new Received();
    let state: 'flags' | 'options' | 'tx' = 'flags';
    let noZeroes = false;
    const replyData = (cookie: Buffer, buf: Buffer, len: number): void => {
      sock.write(encodeSimpleReply(0, cookie));
      sock.write(buf.subarray(0, len), () => free.push(buf));
    };
    /** Pool completions are corked until the end of their callback's tick. */
    const later = (f: () => void) => (err: Error | null): void => {
      if (err) { sock.destroy(err); return; }
      sock.cork();
      f();
      process.nextTick(() => sock.uncork());
    };
    const onRead = (offset: number, len: number, cookie: Buffer): void => {
      let buf = free.pop();
      if (buf === undefined || buf.length < len) buf = Buffer.allocUnsafeSlow(len);
      const b = buf;
      if (mode === 'loop') {
        readSync(fd, b, 0, len, offset);
        replyData(cookie, b, len);
      } else {
        read(fd, b, 0, len, offset, later(() => replyData(cookie, b, len)));
      }
    };
    const onWrite = (offset: number, payload: Buffer[], cookie: Buffer): void => {
      if (mode === 'loop') {
        writevSync(fd, payload, offset);
        sock.write(encodeSimpleReply(0, cookie));
      } else {
        writev(fd, payload, offset, later(() => sock.write(encodeSimpleReply(0, cookie))));
      }
    };
    sock.write(encodeGreeting(HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes));
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => {
      rx.push(d);
      sock.cork();
      for (;;) {
        if (state === 'flags') {
          if (rx.length < CLIENT_FLAGS_LEN) break;
          noZeroes = (rx.takeJoined(CLIENT_FLAGS_LEN).readUInt32BE(0) & ClientFlag.NoZeroes) !== 0;
          state = 'options';
        } else if (state === 'options') {
          if (rx.length < OPTION_HEADER_LEN) break;
          const h = decodeOptionHeader(rx.peek(OPTION_HEADER_LEN));
          if (h instanceof Error) { sock.destroy(); return; }
          if (rx.length < OPTION_HEADER_LEN + h.length) break;
          rx.take(OPTION_HEADER_LEN + h.length);
          if (h.opt === Opt.EXPORT_NAME) {
            sock.write(encodeExportNameReply(size, TX_FLAGS, noZeroes));
            state = 'tx';
          } else if (h.opt === Opt.GO || h.opt === Opt.INFO) {
            sock.write(encodeOptionReply(h.opt, Rep.INFO, encodeInfo({ type: Info.EXPORT, size, flags: TX_FLAGS })));
            sock.write(encodeOptionReply(h.opt, Rep.ACK));
            if (h.opt === Opt.GO) state = 'tx';
          } else if (h.opt === Opt.ABORT) {
            sock.end(encodeOptionReply(h.opt, Rep.ACK));
            return;
          } else {
            sock.write(encodeOptionReply(h.opt, Rep.ERR_UNSUP));
          }
        } else {
          if (rx.length < REQUEST_HEADER_LEN) break;
          const h = decodeRequestHeader(rx.peek(REQUEST_HEADER_LEN));
          const known = h instanceof Error ? false : h.type === Cmd.READ || h.type === Cmd.WRITE || h.type === Cmd.FLUSH || h.type === Cmd.DISC;
          if (h instanceof Error || !known || h.length > MAX_REQUEST || h.offset + h.length > size) { sock.destroy(); return; }
          if (h.type === Cmd.WRITE && rx.length < REQUEST_HEADER_LEN + h.length) break;
          // The cookie must outlive the chunk it came in.
          const cookie = Buffer.from(rx.takeJoined(REQUEST_HEADER_LEN).subarray(8, 16));
          if (h.type === Cmd.READ) onRead(h.offset, h.length, cookie);
          else if (h.type === Cmd.WRITE) onWrite(h.offset, rx.take(h.length), cookie);
          else if (h.type === Cmd.FLUSH) { fdatasync(fd, later(() => sock.write(encodeSimpleReply(0, cookie)))); }
          else { sock.end(); return; }
        }
      }
      sock.uncork();
    });
  });
  srv.listen(0, '127.0.0.1', () => console.log(`port ${(srv.address() as net.AddressInfo).port}`));
  process.on('SIGTERM', () => { srv.close(); closeSync(fd); process.exit(0); });
}

interface Server { uri: string; pid: number; stop(): Promise<unknown> }

async function startFloor(mode: FloorMode, file: string, writable: boolean): Promise<Server> {
  const p = spawnTracked(process.execPath, [...process.execArgv, import.meta.filename, 'serve', mode, file, writable ? 'rw' : 'ro']);
  await waitLine(p, (l) => l.startsWith('port '));
  const port = /^port (\d+)$/m.exec(p.stdout())![1];
  return { uri: `nbd://127.0.0.1:${port}/${exportNameOf(file)}`, pid: p.pid, stop: () => p.stop() };
}

async function main(): Promise<void> {
  installExitHandlers();
  const { values } = parseArgs({ options: {
    workload: { type: 'string', default: 'seqread-1m' }, seconds: { type: 'string', default: '8' }, reps: { type: 'string', default: '3' },
    servers: { type: 'string', default: 'nbdkit-file,floor-loop,floor-pool,snapnbd' },
  } });
  const servers = values.servers!.split(',');
  for (const name of servers) {
    const known = name.startsWith('floor-') ? (FLOOR_MODES as readonly string[]).includes(name.slice('floor-'.length)) : ['nbdkit-file', 'nbdkit-cow', 'snapnbd'].includes(name);
    if (!known) throw new Error(`--servers: nbdkit-file, nbdkit-cow, snapnbd or floor-${FLOOR_MODES.join('|floor-')}, not ${name}`);
  }
  const w = WORKLOADS.find((x) => x.name === values.workload && x.client === 'fio' && x.fio && !x.via && !x.prefillThenSnapshots);
  if (!w) throw new Error(`--workload: a plain fio workload of bench/lib/config.ts, not ${values.workload}`);
  const work = mkdtempSync(join(tmpdir(), 'seq-floor-'));
  try {
    const image = join(work, 'bench.raw');
    createImage(image, IMAGE_BYTES);
    const ctx: BenchContext = { workDir: work, image, imageBytes: IMAGE_BYTES, snapnbdEnv: {}, snapnbdBin: SNAPNBD_BIN, compareBin: null, cpuProfDir: null, verbose: false };
    const results = new Map<string, { mbps: number; cpuMsPerGiB: number; userMsPerGiB: number }[]>(servers.map((s) => [s, []]));
    for (let r = 0; r < Number(values.reps); r++) {
      // Rotate the order so that no server always follows another.
      const order = servers.map((_, i) => servers[(i + r) % servers.length]!);
      for (const name of order) {
        // The floor writes where nbdkit-file does: a copy, so the image stays pristine.
        const inst: Server = name.startsWith('floor-')
          ? await startFloor(name.slice('floor-'.length) as FloorMode, w.writes ? writableCopy(ctx) : image, w.writes)
          : await startPeer(ctx, name as PeerName, w.writes);
        try {
          warm(image);
          writeBack();
          const t0 = processTimes(inst.pid)!;
          const m = await runFio(inst.uri, w.name, w.fio!, fioTimeBased(Number(values.seconds)), work);
          const t1 = processTimes(inst.pid)!;
          const gib = m.bytes / 2 ** 30;
          const row = { mbps: m.mbps, cpuMsPerGiB: ((t1.user + t1.sys) - (t0.user + t0.sys)) * 1000 / gib, userMsPerGiB: (t1.user - t0.user) * 1000 / gib };
          results.get(name)!.push(row);
          console.log(`rep ${r + 1} ${name}: ${row.mbps.toFixed(0)} MB/s, server CPU ${row.cpuMsPerGiB.toFixed(0)} ms/GiB (user ${row.userMsPerGiB.toFixed(0)})`);
        } finally {
          await inst.stop();
        }
      }
    }
    const refs = ['nbdkit-file', 'nbdkit-cow'].filter((n) => results.get(n)?.length).map((n) => ({ n, mbps: median(results.get(n)!.map((x) => x.mbps)) }));
    for (const [name, rs] of results) {
      const mbps = median(rs.map((x) => x.mbps));
      const vs = refs.map((ref) => `, ${(mbps / ref.mbps).toFixed(2)}× ${ref.n}`).join('');
      console.log(`${name}: median ${mbps.toFixed(0)} MB/s${vs}, server CPU ${median(rs.map((x) => x.cpuMsPerGiB)).toFixed(0)} ms/GiB (user ${median(rs.map((x) => x.userMsPerGiB)).toFixed(0)})`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[2] === 'serve') serve(process.argv[3] as FloorMode, process.argv[4]!, process.argv[5] === 'rw');
else await main();
