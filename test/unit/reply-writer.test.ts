// ReplyWriter: a turn's replies leave as one write, in order, and the memory-budget bytes of a
// batch come back once the socket has taken it: at once when the write completed in the call (a
// plain socket), else through a marker. On a socket whose writes complete later (TLS) the marker
// rides in the batch's own write: one write per batch, never an empty write of its own. Pooled
// reply buffers come back the same way, and never from a socket that is gone.
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { ReplyWriter } from '../../src/server/reply-writer.ts';
import { loadTlsMaterial, TLS_WRITE_HIGH_WATER_MARK, upgradeToTls } from '../../src/server/tls.ts';
import { makeTlsMaterial } from '../helpers/tls-material.ts';

/** A sink whose writes complete at once (`later` false) or from a later turn, like a TLS socket's. */
function sink(later: boolean) {
  const writes: Buffer[][] = [];
  const pending: (() => void)[] = [];
  const w = new Writable({
    highWaterMark: 1 << 20,
    writev(chunks, cb) {
      writes.push(chunks.map((c) => c.chunk as Buffer));
      if (later) pending.push(() => cb());
      else cb();
    },
    write(chunk: Buffer, _enc, cb) {
      writes.push([chunk]);
      if (later) pending.push(() => cb());
      else cb();
    },
  });
  return { w, writes, complete: () => { for (const f of pending.splice(0)) f(); } };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const reply = (i: number): Buffer => Buffer.from(`reply-${i};`);

describe('ReplyWriter', () => {
  it('a socket whose writes complete later: one write per batch (the budget marker inside it), bytes back only after that write', async () => {
    const { w, writes, complete } = sink(true);
    let flushed = 0;
    const writer = new ReplyWriter(w as never, (b) => { flushed += b; });
    const BATCHES = 10;
    for (let b = 0; b < BATCHES; b++) {
      writer.send(reply(2 * b), reply(2 * b + 1));
      writer.release(100);
      writer.send(reply(2 * b + 2000));
      writer.release(50);
      await turn(); // uncorked: the batch is written, its completion held
      expect(flushed).toBe(b * 150);
      complete();
      await turn();
      complete(); // the first batch's marker of its own (the writer had not yet seen writes linger)
      await turn();
      expect(flushed).toBe((b + 1) * 150);
    }
    // The first batch taught the writer; every later batch is exactly one write with no extra empty one.
    expect(writes.length).toBe(BATCHES + 1);
    expect(writes.filter((ch) => ch.every((c) => c.length === 0)).length).toBe(1);
    const text = writes.flat().map((c) => c.toString()).join('');
    const expected = Array.from({ length: BATCHES }, (_, b) => `reply-${2 * b};reply-${2 * b + 1};reply-${2 * b + 2000};`).join('');
    expect(text).toBe(expected);
  });

  it('a socket whose writes complete in the call: bytes back at uncork, no marker written', async () => {
    const { w, writes } = sink(false);
    let flushed = 0;
    const writer = new ReplyWriter(w as never, (b) => { flushed += b; });
    for (let b = 0; b < 5; b++) {
      writer.send(reply(b), reply(b + 100));
      writer.release(10);
      await turn();
      expect(flushed).toBe((b + 1) * 10);
    }
    expect(writes.length).toBe(5);
    expect(writes.flat().some((c) => c.length === 0)).toBe(false);
  });

  it('recycles a reply buffer only once its batch has left: at once when the write completed, else at its completion', async () => {
    for (const later of [false, true]) {
      const { w, writes, complete } = sink(later);
      const recycled: Buffer[] = [];
      const writer = new ReplyWriter(w as never, () => undefined, (bufs) => recycled.push(...bufs));
      for (let b = 0; b < 4; b++) {
        const data = Buffer.from(`data-${b}`);
        writer.send(reply(b), data);
        writer.recycle(data);
        expect(recycled).not.toContain(data); // still corked: not written yet
        await turn();
        if (later) {
          expect(recycled, 'a write still in flight').not.toContain(data);
          complete();
          await turn();
          complete(); // a marker of its own, before the writer learns that writes linger
          await turn();
        }
        expect(recycled).toContain(data);
        expect(writes.flat()).toContain(data);
      }
    }
  });

  it('drops a reply buffer whose socket is gone or whose write failed', async () => {
    const recycled: Buffer[] = [];
    const { w } = sink(true);
    const writer = new ReplyWriter(w as never, () => undefined, (bufs) => recycled.push(...bufs));
    const data = Buffer.from('data');
    writer.send(reply(1), data);
    writer.recycle(data);
    await turn();
    w.destroy();
    await turn();
    await turn();
    writer.recycle(Buffer.from('after'));
    await turn();
    expect(recycled).toEqual([]);
  });

  describe('over a real TLS socket (upgraded in place, as after STARTTLS)', () => {
    const cleanup: (() => void)[] = [];
    afterEach(() => { for (const f of cleanup.splice(0)) f(); });

    /** A TLS client connected to a server socket upgraded in place: [client, server side]. */
    async function tlsPair(): Promise<[tls.TLSSocket, tls.TLSSocket]> {
      const m = makeTlsMaterial();
      cleanup.push(() => rmSync(m.root, { recursive: true, force: true }));
      const material = loadTlsMaterial({ cert: m.serverCert, key: m.serverKey });
      const server = net.createServer();
      cleanup.push(() => server.close());
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
      const [c, s] = await Promise.all([
        new Promise<tls.TLSSocket>((resolve, reject) => {
          const t = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', ca: readFileSync(m.caCert, 'utf8'), checkServerIdentity: () => undefined }, () => resolve(t));
          t.once('error', reject);
        }),
        (async () => {
          const up = upgradeToTls(await accepted, material);
          await up.ready;
          return up.socket;
        })(),
      ]);
      cleanup.push(() => { c.destroy(); s.destroy(); });
      return [c, s];
    }

    it('every batch after the first is one write of the TLS socket; the client reads every reply in order', async () => {
      const [c, s] = await tlsPair();
      let received = '';
      c.on('data', (d: Buffer) => { received += d.toString(); });
      // Count the TLS socket's writes (each one an SSL_write and a write to the kernel).
      let writeCalls = 0;
      const proto = s as unknown as { _writev: (...a: unknown[]) => void; _write: (...a: unknown[]) => void };
      const writev = proto._writev.bind(s);
      const write = proto._write.bind(s);
      proto._writev = (...a) => { writeCalls++; writev(...a); };
      proto._write = (...a) => { writeCalls++; write(...a); };
      let flushed = 0;
      let waiting: (() => void) | null = null;
      const writer = new ReplyWriter(s, (b) => { flushed += b; waiting?.(); });
      const BATCHES = 20;
      let expected = '';
      for (let b = 0; b < BATCHES; b++) {
        const until = new Promise<void>((r) => (waiting = r));
        for (let i = 0; i < 3; i++) {
          writer.send(reply(b * 3 + i), Buffer.alloc(64, 0x61 + i));
          expected += `reply-${b * 3 + i};${String.fromCharCode(0x61 + i).repeat(64)}`;
          writer.release(4096);
        }
        await until;
        expect(flushed).toBe((b + 1) * 3 * 4096);
      }
      expect(writeCalls).toBe(BATCHES + 1);
      while (received.length < expected.length) await new Promise((r) => setTimeout(r, 5));
      expect(received).toBe(expected);
    });

    it("a turn of 32 read replies of 4 KiB does not fill the TLS socket (its writes complete a turn later); its readable side keeps Node's default", async () => {
      const [c, s] = await tlsPair();
      let received = 0;
      c.on('data', (d: Buffer) => { received += d.length; });
      const writer = new ReplyWriter(s);
      const REPLIES = 32;
      const oks: boolean[] = [];
      for (let i = 0; i < REPLIES; i++) oks.push(writer.send(reply(i), Buffer.alloc(4096, 0x62)));
      // The session stops reading requests whenever send() says false (session.ts updateFlow).
      expect(oks.every(Boolean)).toBe(true);
      expect(s.writableHighWaterMark).toBe(TLS_WRITE_HIGH_WATER_MARK);
      expect(s.readableHighWaterMark).toBe(new net.Socket().readableHighWaterMark);
      const total = oks.length * 4096 + Array.from({ length: REPLIES }, (_, i) => reply(i).length).reduce((a, b) => a + b, 0);
      while (received < total) await new Promise((r) => setTimeout(r, 5));
      expect(received).toBe(total);
    });
  });
});
