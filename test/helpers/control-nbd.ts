// A minimal NBD client for the control tests: fixed newstyle, NBD_OPT_GO, simple replies,
// pipelined requests matched by cookie. Enough to hold a connection open (busy rules), to be
// disconnected (forced rollback), and to issue many recorded writes at a chosen queue depth
// (point in time under load). Real tools (nbdcopy, qemu-io) do the data checks.
import net from 'node:net';
import {
  ClientFlag, Cmd, IHAVEOPT, NBDMAGIC, OPTION_REPLY_MAGIC, Opt, REP_ERROR_BIT, REQUEST_MAGIC, Rep, SIMPLE_REPLY_MAGIC,
} from '../../src/protocol/constants.ts';

interface Waiter { resolve(v: Buffer): void; reject(e: Error): void; readLen: number }

export class NbdTestClient {
  readonly size: number;
  /** Resolves when the server closes the connection. */
  readonly closed: Promise<void>;
  private readonly sock: net.Socket;
  private buf: Buffer = Buffer.alloc(0);
  private readonly pending = new Map<bigint, Waiter>();
  private nextCookie = 1n;
  private isClosed = false;

  private constructor(sock: net.Socket, size: number, rest: Buffer) {
    this.sock = sock;
    this.size = size;
    this.buf = rest;
    this.closed = new Promise((resolve) => sock.once('close', () => {
      this.isClosed = true;
      for (const w of this.pending.values()) w.reject(new Error('NBD connection closed'));
      this.pending.clear();
      resolve();
    }));
    sock.on('data', (d: Buffer) => {
      this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
      this.parseReplies();
    });
    sock.on('error', () => {});
    this.parseReplies();
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  static async connect(port: number, exportName: string): Promise<NbdTestClient> {
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let wake: (() => void) | null = null;
    let failed: Error | null = null;
    const onData = (d: Buffer): void => { buf = Buffer.concat([buf, d]); wake?.(); };
    sock.on('data', onData);
    sock.once('error', (e) => { failed = e; wake?.(); });
    sock.once('close', () => { failed ??= new Error('closed during handshake'); wake?.(); });
    const need = async (n: number): Promise<Buffer> => {
      while (buf.length < n) {
        if (failed) throw failed;
        await new Promise<void>((r) => { wake = r; });
        wake = null;
      }
      const out = buf.subarray(0, n);
      buf = buf.subarray(n);
      return out;
    };
    const greet = await need(18);
    if (greet.readBigUInt64BE(0) !== NBDMAGIC || greet.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('not an NBD server');
    const cflags = Buffer.alloc(4);
    cflags.writeUInt32BE(ClientFlag.FixedNewstyle | ClientFlag.NoZeroes);
    const name = Buffer.from(exportName, 'utf8');
    const opt = Buffer.alloc(16 + 4 + name.length + 2);
    opt.writeBigUInt64BE(IHAVEOPT, 0);
    opt.writeUInt32BE(Opt.GO, 8);
    opt.writeUInt32BE(4 + name.length + 2, 12);
    opt.writeUInt32BE(name.length, 16);
    name.copy(opt, 20);
    opt.writeUInt16BE(0, 20 + name.length);
    sock.write(Buffer.concat([cflags, opt]));
    let size = -1;
    for (;;) {
      const h = await need(20);
      if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
      const type = h.readUInt32BE(12);
      const data = await need(h.readUInt32BE(16));
      if (type === Rep.INFO && data.length >= 12 && data.readUInt16BE(0) === 0) size = Number(data.readBigUInt64BE(2));
      else if (type === Rep.ACK) break;
      else if ((type & REP_ERROR_BIT) !== 0) {
        sock.destroy();
        throw new Error(`NBD_OPT_GO '${exportName}' refused: reply 0x${type.toString(16)} ${data.toString('utf8')}`);
      }
    }
    sock.off('data', onData);
    sock.removeAllListeners('error');
    sock.removeAllListeners('close');
    return new NbdTestClient(sock, size, Buffer.from(buf));
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.request(Cmd.READ, offset, length, null);
  }

  async write(offset: number, data: Buffer, fua = false): Promise<void> {
    await this.request(Cmd.WRITE, offset, data.length, data, fua ? 1 : 0);
  }

  async flush(): Promise<void> {
    await this.request(Cmd.FLUSH, 0, 0, null);
  }

  /** NBD_CMD_DISC and wait for the server to close. */
  async disconnect(): Promise<void> {
    if (!this.isClosed) {
      const h = this.header(Cmd.DISC, 0, 0, 0);
      this.sock.end(h);
    }
    await this.closed;
  }

  destroy(): void {
    this.sock.destroy();
  }

  private header(type: number, offset: number, length: number, flags: number): Buffer {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(this.nextCookie, 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length, 24);
    return h;
  }

  private request(type: number, offset: number, length: number, payload: Buffer | null, flags = 0): Promise<Buffer> {
    if (this.isClosed) return Promise.reject(new Error('NBD connection closed'));
    const cookie = this.nextCookie;
    const h = this.header(type, offset, length, flags);
    this.nextCookie++;
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(cookie, { resolve, reject, readLen: type === Cmd.READ ? length : 0 });
      this.sock.cork();
      this.sock.write(h);
      if (payload) this.sock.write(payload);
      this.sock.uncork();
    });
  }

  private parseReplies(): void {
    for (;;) {
      if (this.buf.length < 16) return;
      if (this.buf.readUInt32BE(0) !== SIMPLE_REPLY_MAGIC) {
        this.sock.destroy();
        return;
      }
      const err = this.buf.readUInt32BE(4);
      const cookie = this.buf.readBigUInt64BE(8);
      const w = this.pending.get(cookie);
      const dataLen = w && err === 0 ? w.readLen : 0;
      if (this.buf.length < 16 + dataLen) return;
      const data = Buffer.from(this.buf.subarray(16, 16 + dataLen));
      this.buf = this.buf.subarray(16 + dataLen);
      if (!w) continue;
      this.pending.delete(cookie);
      if (err !== 0) w.reject(Object.assign(new Error(`NBD error ${err}`), { nbdErrno: err }));
      else w.resolve(data);
    }
  }
}
