// How fast can any Node server serve seqread-1m? A minimal read-only NBD server (this file, run
// as `serve`: handshake, READ and DISC, nothing else: no engine, no map, no checks) beside
// nbdkit-file and snapnbd, under the harness's seqread-1m (fio --ioengine=nbd, 1 MiB reads at
// QD 8, page cache hot), interleaved rep by rep. The minimal server runs in two ways:
//   loop: pread synchronously on the event loop, then write header and data (what a small Node
//         server would do; the thread that reads is the thread that sends, as in nbdkit);
//   pool: pread in libuv's thread pool (fs.read), then write (what snapnbd does for 1 MiB).
// Both write the replies of one socket read in one writev (cork/uncork) from buffers reused once
// their write completes. If the floor is near nbdkit-file, the gap to snapnbd is snapnbd's own
// work; if the floor is near snapnbd, it is Node's one thread per socket.
// Run: node --import tsx bench/micro/seqread-floor.ts [--seconds 8] [--reps 3] [--servers nbdkit-file,floor-loop,floor-pool,snapnbd]
import { closeSync, fstatSync, mkdtempSync, openSync, read, readSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ClientFlag, Cmd, HandshakeFlag, Info, Opt, Rep, TxFlag, CLIENT_FLAGS_LEN, OPTION_HEADER_LEN, REQUEST_HEADER_LEN } from '../../src/protocol/constants.ts';
import { decodeOptionHeader, encodeExportNameReply, encodeGreeting, encodeInfo, encodeOptionReply } from '../../src/protocol/handshake.ts';
import { decodeRequestHeader, encodeSimpleReply } from '../../src/protocol/transmission.ts';
import { fioTimeBased, runFio } from '../lib/clients.ts';
import { createImage } from '../lib/image.ts';
import { processTimes, warm } from '../lib/machine.ts';
import { exportNameOf, SNAPNBD_BIN, startPeer, type BenchContext } from '../lib/peers.ts';
import { installExitHandlers, spawnTracked, waitLine } from '../lib/procs.ts';
import { median } from '../lib/stats.ts';

const IMAGE_BYTES = 2 ** 30;
const MAX_READ = 32 * 1024 * 1024;
const TX_FLAGS = TxFlag.HAS_FLAGS | TxFlag.READ_ONLY;
const FLOOR_MODES = ['loop', 'pool'] as const;
type FloorMode = (typeof FLOOR_MODES)[number];

/** The minimal server: one connection at a time is all fio needs, but any number work. */
function serve(mode: FloorMode, image: string): void {
  const fd = openSync(image, 'r');
  const size = fstatSync(fd).size;
  const srv = net.createServer((sock) => {
    sock.setNoDelay(true);
    const free: Buffer[] = [];
    let acc: Buffer = Buffer.alloc(0);
    let state: 'flags' | 'options' | 'tx' = 'flags';
    let noZeroes = false;
    const reply = (cookie: Buffer, buf: Buffer, len: number): void => {
      sock.write(encodeSimpleReply(0, cookie));
      sock.write(buf.subarray(0, len), () => free.push(buf));
    };
    const onRead = (offset: number, len: number, cookie: Buffer): void => {
      const buf = free.pop() ?? Buffer.allocUnsafeSlow(len);
      if (mode === 'loop') {
        readSync(fd, buf, 0, len, offset);
        reply(cookie, buf, len);
        return;
      }
      read(fd, buf, 0, len, offset, (err) => {
        if (err) { sock.destroy(err); return; }
        sock.cork();
        reply(cookie, buf, len);
        process.nextTick(() => sock.uncork());
      });
    };
    sock.write(encodeGreeting(HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes));
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => {
      acc = acc.length === 0 ? d : Buffer.concat([acc, d]);
      sock.cork();
      for (;;) {
        if (state === 'flags') {
          if (acc.length < CLIENT_FLAGS_LEN) break;
          noZeroes = (acc.readUInt32BE(0) & ClientFlag.NoZeroes) !== 0;
          acc = acc.subarray(CLIENT_FLAGS_LEN);
          state = 'options';
        } else if (state === 'options') {
          if (acc.length < OPTION_HEADER_LEN) break;
          const h = decodeOptionHeader(acc);
          if (h instanceof Error) { sock.destroy(); return; }
          if (acc.length < OPTION_HEADER_LEN + h.length) break;
          acc = acc.subarray(OPTION_HEADER_LEN + h.length);
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
          if (acc.length < REQUEST_HEADER_LEN) break;
          const h = decodeRequestHeader(acc);
          if (h instanceof Error || h.type !== Cmd.READ || h.length > MAX_READ || h.offset + h.length > size) {
            sock.destroy();
            return;
          }
          // The cookie must outlive `acc`, which the next read replaces.
          onRead(h.offset, h.length, Buffer.from(h.cookie));
          acc = acc.subarray(REQUEST_HEADER_LEN);
        }
      }
      sock.uncork();
    });
  });
  srv.listen(0, '127.0.0.1', () => console.log(`port ${(srv.address() as net.AddressInfo).port}`));
  process.on('SIGTERM', () => { srv.close(); closeSync(fd); process.exit(0); });
}

interface Server { uri: string; pid: number; stop(): Promise<unknown> }

async function startFloor(mode: FloorMode, image: string): Promise<Server> {
  const p = spawnTracked(process.execPath, [...process.execArgv, import.meta.filename, 'serve', mode, image]);
  await waitLine(p, (l) => l.startsWith('port '));
  const port = /^port (\d+)$/m.exec(p.stdout())![1];
  return { uri: `nbd://127.0.0.1:${port}/${exportNameOf(image)}`, pid: p.pid, stop: () => p.stop() };
}

async function main(): Promise<void> {
  installExitHandlers();
  const { values } = parseArgs({ options: {
    seconds: { type: 'string', default: '8' }, reps: { type: 'string', default: '3' },
    servers: { type: 'string', default: 'nbdkit-file,floor-loop,floor-pool,snapnbd' },
  } });
  const servers = values.servers!.split(',');
  const work = mkdtempSync(join(tmpdir(), 'seqread-floor-'));
  try {
    const image = join(work, 'bench.raw');
    createImage(image, IMAGE_BYTES);
    const ctx: BenchContext = { workDir: work, image, imageBytes: IMAGE_BYTES, snapnbdEnv: {}, snapnbdBin: SNAPNBD_BIN, compareBin: null, cpuProfDir: null, verbose: false };
    const results = new Map<string, { mbps: number; cpuMsPerGiB: number; userMsPerGiB: number }[]>(servers.map((s) => [s, []]));
    for (let r = 0; r < Number(values.reps); r++) {
      // Rotate the order so that no server always follows another.
      const order = servers.map((_, i) => servers[(i + r) % servers.length]!);
      for (const name of order) {
        const inst: Server = name.startsWith('floor-')
          ? await startFloor(name.slice('floor-'.length) as FloorMode, image)
          : await startPeer(ctx, name as 'nbdkit-file' | 'snapnbd', false);
        try {
          warm(image);
          const t0 = processTimes(inst.pid)!;
          const m = await runFio(inst.uri, 'seqread', { rw: 'read', bs: '1M', iodepth: 8 }, fioTimeBased(Number(values.seconds)), work);
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
    const ref = results.get('nbdkit-file');
    const refMbps = ref && ref.length ? median(ref.map((x) => x.mbps)) : null;
    for (const [name, rs] of results) {
      const mbps = median(rs.map((x) => x.mbps));
      const vs = refMbps ? `, ${(mbps / refMbps).toFixed(2)}× nbdkit-file` : '';
      console.log(`${name}: median ${mbps.toFixed(0)} MB/s${vs}, server CPU ${median(rs.map((x) => x.cpuMsPerGiB)).toFixed(0)} ms/GiB (user ${median(rs.map((x) => x.userMsPerGiB)).toFixed(0)})`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[2] === 'serve') serve(process.argv[3] as FloorMode, process.argv[4]!);
else await main();
