// Runs inside the test VM (plain JavaScript: the guest has Node but not tsx), once per boot of
// test/vm/power-cut.test.ts: starts `snapnbd serve` on the ext4 data disk, prints what the store
// holds (`@@V` lines: every node's blocks as counters), then writes stamped 4 KiB blocks over NBD
// with FLUSH and FUA and takes snapshots through the control socket until the host cuts the
// power, printing each step as it is issued and answered (`@@P` lines), synchronously to the
// console so that a line printed before the power cut reached the host.
// Usage: node power-cut-guest.mjs NODE_CMD SERVER_SCRIPT DATA_DIR SEED COUNTER
import { spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import net from 'node:net';

const [nodeCmd, serverScript, dataDir, seedArg, counterArg] = process.argv.slice(2);
const BLOCK = 4096;
const BLOCKS = 1024;
const MAGIC = 0x5eedb10c;
const PORT = 10809;
const say = (line) => writeSync(1, line + '\n');
// Every step line carries a sequence number: the host fails loudly on a line the console lost.
let seq = 0;
const step = (line) => say(`@@P ${++seq} ${line}`);

let x = Number(seedArg) >>> 0 || 1;
const rnd = (n) => {
  x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
  return x % n;
};

function blockContent(block, counter) {
  const b = Buffer.alloc(BLOCK, (counter * 31 + block) & 0xff);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(block, 4);
  b.writeUInt32LE(counter, 8);
  return b;
}

/** A minimal NBD client (fixed newstyle, EXPORT_NAME, simple replies). */
class Nbd {
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.waiters = [];
    this.pending = new Map();
    this.cookie = 1n;
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.pump(); });
    sock.on('error', (e) => { for (const w of this.pending.values()) w.reject(e); });
  }
  static async connect(name) {
    const sock = net.connect(PORT, '127.0.0.1');
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    const c = new Nbd(sock);
    await c.need(18); // NBDMAGIC, IHAVEOPT, handshake flags
    c.take(18);
    const opt = Buffer.alloc(16);
    opt.writeBigUInt64BE(0x49484156454f5054n, 0);
    opt.writeUInt32BE(1, 8); // NBD_OPT_EXPORT_NAME
    opt.writeUInt32BE(name.length, 12);
    sock.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), opt, Buffer.from(name)])); // FIXED_NEWSTYLE | NO_ZEROES
    await c.need(10);
    c.take(10);
    c.handshaken = true;
    c.pump();
    return c;
  }
  need(n) {
    if (this.buf.length >= n) return Promise.resolve();
    return new Promise((res) => this.waiters.push({ n, res }));
  }
  take(n) {
    const b = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return b;
  }
  pump() {
    for (const w of [...this.waiters]) if (this.buf.length >= w.n) { this.waiters.splice(this.waiters.indexOf(w), 1); w.res(); }
    if (!this.handshaken) return;
    while (this.buf.length >= 16) {
      const err = this.buf.readUInt32BE(4);
      const cookie = this.buf.readBigUInt64BE(8);
      const p = this.pending.get(cookie);
      const len = p && err === 0 ? p.readLen : 0;
      if (this.buf.length < 16 + len) return;
      const data = Buffer.from(this.buf.subarray(16, 16 + len));
      this.buf = this.buf.subarray(16 + len);
      this.pending.delete(cookie);
      if (err !== 0) p?.reject(new Error(`NBD error ${err}`));
      else p?.resolve(data);
    }
  }
  request(type, flags, offset, length, payload) {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(0x25609513, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    const cookie = this.cookie++;
    h.writeBigUInt64BE(cookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, { resolve, reject, readLen: type === 0 ? length : 0 });
      this.sock.write(payload ? Buffer.concat([h, payload]) : h);
    });
  }
  read(offset, length) { return this.request(0, 0, offset, length, null); }
  write(offset, data, fua) { return this.request(1, fua ? 1 : 0, offset, data.length, data); }
  flush() { return this.request(3, 0, 0, 0, null); }
}

/** JSON-RPC over the control socket, one call at a time. */
class Control {
  static async connect(path) {
    const sock = net.connect(path);
    await new Promise((res, rej) => { sock.once('connect', res); sock.once('error', rej); });
    const c = new Control();
    c.sock = sock;
    c.buf = '';
    c.id = 1;
    c.waiting = new Map();
    sock.setEncoding('utf8').on('data', (d) => {
      c.buf += d;
      let i;
      while ((i = c.buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(c.buf.slice(0, i));
        c.buf = c.buf.slice(i + 1);
        const w = c.waiting.get(msg.id);
        c.waiting.delete(msg.id);
        if (msg.error) w?.reject(new Error(msg.error.message));
        else w?.resolve(msg.result);
      }
    });
    return c;
  }
  call(method, params) {
    const id = this.id++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.sock.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }
}

async function retry(what, fn) {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= 600) throw new Error(`${what}: ${e.message}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Every block of a node as its counter (0: zeros); a torn or misplaced block is reported. */
async function counters(c, exportName) {
  const buf = await c.read(0, BLOCK * BLOCKS);
  const out = [];
  for (let b = 0; b < BLOCKS; b++) {
    const blk = buf.subarray(b * BLOCK, (b + 1) * BLOCK);
    if (blk.every((v) => v === 0)) { out.push(0); continue; }
    const n = blk.readUInt32LE(8);
    if (blk.readUInt32LE(0) !== MAGIC || blk.readUInt32LE(4) !== b || !blk.equals(blockContent(b, n))) {
      say(`@@BAD ${exportName} block ${b}`);
      out.push(-1);
    } else out.push(n);
  }
  return out;
}

async function main() {
  const server = spawn(nodeCmd, [serverScript, 'serve', '--data-dir', dataDir, '--listen', `127.0.0.1:${PORT}`,
    '--volume', `v=${(BLOCK * BLOCKS) / 1048576}M`, '--log-level', 'warn'], { stdio: ['ignore', 'inherit', 'inherit'] });
  server.on('exit', (code, sig) => say(`@@SERVER-EXIT ${code} ${sig}`));
  const ctl = await retry('control socket', () => Control.connect(`${dataDir}/control.sock`));
  const dev = await retry('nbd', () => Nbd.connect('v'));
  // What survived: the head and every snapshot, by content.
  const snaps = (await ctl.call('snapshot.list', { volume: 'v' })).snapshots.map((s) => s.name);
  say(`@@V head ${(await counters(dev, 'v')).join(',')}`);
  for (const s of snaps) {
    const sc = await Nbd.connect(`v@${s}`);
    say(`@@V ${s} ${(await counters(sc, `v@${s}`)).join(',')}`);
    sc.sock.destroy();
  }
  say('@@VERIFIED');
  let counter = Number(counterArg);
  for (;;) {
    const batch = [];
    const n = 1 + rnd(8);
    const inBatch = new Set();
    for (let i = 0; i < n; i++) {
      const block = rnd(BLOCKS);
      if (inBatch.has(block)) continue;
      inBatch.add(block);
      const c = ++counter;
      const fua = rnd(10) === 0;
      step(`I ${block} ${c}`);
      batch.push(dev.write(block * BLOCK, blockContent(block, c), fua).then(() => step(`${fua ? 'U' : 'W'} ${block} ${c}`)));
    }
    await Promise.all(batch);
    if (rnd(3) === 0) {
      const upTo = counter;
      await dev.flush();
      step(`F ${upTo}`);
    }
    if (rnd(12) === 0) {
      const name = `s${counter}`;
      await ctl.call('snapshot.create', { volume: 'v', name });
      step(`S ${name}`);
      const all = (await ctl.call('snapshot.list', { volume: 'v' })).snapshots.map((s) => s.name);
      if (all.length > 3) {
        step(`X ${all[0]}`);
        await ctl.call('snapshot.delete', { volume: 'v', name: all[0] });
        step(`D ${all[0]}`);
      }
    }
  }
}

main().catch((e) => {
  say(`@@GUEST-ERROR ${e.stack ?? e}`);
  process.exit(1);
});
