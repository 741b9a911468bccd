// The connection's receive slabs: no slab is read into while the decoder still needs its bytes or
// a WRITE in it is in flight; a real socket delivers in order through them; and a server whose
// held write shares slabs with 48 MiB of later writes writes what the client sent.
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { describe, expect, it } from 'vitest';
import { NbdServer } from '../../src/server/listener.ts';
import { ReceiveSlabs, SLAB_BYTES, SLAB_READ_MIN, SlabPool, readIntoSlabs } from '../../src/server/receive-slabs.ts';
import { StaticExports } from '../../src/server/static-exports.ts';
import { loadTlsMaterial } from '../../src/server/tls.ts';
import type { WriteOptions } from '../../src/storage/device.ts';
import { MemoryDevice } from '../helpers/memory-device.ts';
import { NBD, RawClient } from '../helpers/raw-client.ts';
import { makeTlsMaterial } from '../helpers/tls-material.ts';

/** Drives `slabs` as net.Socket does: a target at start, then after each read the callback and a new target. */
class FakeSocket {
  private target: Buffer;
  private next = 0;
  readonly delivered: Buffer[] = [];
  private readonly slabs: ReceiveSlabs;
  constructor(slabs: ReceiveSlabs) {
    this.slabs = slabs;
    slabs.deliverTo((c) => this.delivered.push(c));
    this.target = slabs.onread.buffer();
  }

  /** A read of n bytes (at most the target's length), each byte its stream offset mod 251. */
  read(n: number): Buffer {
    n = Math.min(n, this.target.length);
    for (let i = 0; i < n; i++) this.target[i] = (this.next + i) % 251;
    this.next += n;
    this.slabs.onread.callback(n);
    this.target = this.slabs.onread.buffer();
    return this.delivered[this.delivered.length - 1]!;
  }
}

function expectPattern(b: Buffer, streamStart: number): void {
  for (let i = 0; i < b.length; i++) if (b[i] !== (streamStart + i) % 251) throw new Error(`byte ${streamStart + i} was overwritten`);
}

describe('ReceiveSlabs', () => {
  it('never reads into a slab while a payload in it is held, and reuses it once released', () => {
    const pool = new SlabPool();
    const slabs = new ReceiveSlabs(pool);
    slabs.recycle();
    const sock = new FakeSocket(slabs);
    // A 1 MiB payload arriving in reads of 192 KiB: it spans several slabs.
    const len = 1024 * 1024;
    const reads: Buffer[] = [];
    let got = 0;
    while (got < len) {
      const c = sock.read(Math.min(192 * 1024, len - got));
      reads.push(c);
      got += c.length;
    }
    expect(got).toBe(len);
    // The decoder consumed it all and handed it on as one payload, not yet written.
    const release = slabs.hold(0, len);
    slabs.consumed(len);
    // Much more arrives while the write is in flight: none of it may land in the payload's bytes.
    let at = len;
    for (let i = 0; i < 40; i++) {
      at += sock.read(SLAB_BYTES).length;
      slabs.consumed(at);
    }
    let pos = 0;
    for (const r of reads) {
      expectPattern(r, pos);
      pos += r.length;
    }
    expect(pool.reused).toBeGreaterThan(0); // the later reads did recycle (their own slabs)
    const reusedBefore = pool.reused;
    release();
    release(); // idempotent
    for (let i = 0; i < 8; i++) {
      at += sock.read(SLAB_BYTES).length;
      slabs.consumed(at);
    }
    expect(pool.reused).toBeGreaterThan(reusedBefore);
  });

  it('keeps bytes the decoder has not consumed yet, even with no hold', () => {
    const pool = new SlabPool(1); // one free slab: a wrongly freed one is the next target
    const slabs = new ReceiveSlabs(pool);
    slabs.recycle();
    const sock = new FakeSocket(slabs);
    sock.read(SLAB_BYTES); // the slab opened before recycle() (never reused) is full
    slabs.consumed(SLAB_BYTES);
    // The start of a message the decoder still buffers (a payload not complete yet).
    const first = sock.read(SLAB_BYTES - SLAB_READ_MIN + 1);
    let at = SLAB_BYTES + first.length;
    for (let i = 0; i < 20; i++) at += sock.read(SLAB_BYTES).length;
    slabs.consumed(SLAB_BYTES + 1000); // only 1000 bytes of the message consumed
    for (let i = 0; i < 20; i++) at += sock.read(SLAB_BYTES).length;
    expectPattern(first, SLAB_BYTES);
    expect(at).toBeGreaterThan(40 * SLAB_READ_MIN);
  });

  it('never recycles slabs read before transmission (option data may be kept)', () => {
    const pool = new SlabPool();
    const slabs = new ReceiveSlabs(pool);
    const sock = new FakeSocket(slabs);
    let at = 0;
    for (let i = 0; i < 4; i++) {
      at += sock.read(SLAB_BYTES).length;
      slabs.consumed(at);
    }
    expect(pool.size).toBe(0);
    slabs.recycle();
    for (let i = 0; i < 4; i++) {
      at += sock.read(SLAB_BYTES).length;
      slabs.consumed(at);
    }
    expect(pool.size).toBeGreaterThan(0);
  });

  it('caps the shared free list', () => {
    const pool = new SlabPool(2);
    for (let i = 0; i < 5; i++) pool.give(Buffer.alloc(1));
    expect(pool.size).toBe(2);
  });
});

describe('readIntoSlabs', () => {
  it('delivers a TCP stream in order through reused slabs, sees its end, and lets the server close', async () => {
    const pool = new SlabPool();
    const received: Buffer[] = [];
    let ended!: () => void;
    const sawEnd = new Promise<void>((r) => (ended = r));
    let total = 0;
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (accepted) => {
      const slabs = new ReceiveSlabs(pool);
      slabs.recycle();
      const sock = readIntoSlabs(accepted, slabs, true);
      // Consume at once (a copy, as the decoder's caller would keep only what it holds).
      slabs.deliverTo((c) => {
        received.push(Buffer.from(c));
        total += c.length;
        slabs.consumed(slabs.bytes);
      });
      sock.on('data', () => undefined);
      sock.on('end', () => {
        ended();
        sock.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const sent = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < sent.length; i++) sent[i] = (i * 7) % 253;
    const client = net.connect(port, '127.0.0.1');
    try {
      await new Promise<void>((r) => client.once('connect', r));
      client.end(sent);
      await sawEnd;
      expect(total).toBe(sent.length);
      expect(Buffer.concat(received).equals(sent)).toBe(true);
      expect(pool.reused).toBeGreaterThan(0);
      // The accepted socket object is the server's record of the connection: close must finish.
      await new Promise<void>((r) => client.once('close', () => r()));
      const closed = new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
      let timer!: NodeJS.Timeout;
      const stuck = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('server.close() never finished: the accepted socket still counts')), 5_000);
      });
      await Promise.race([closed, stuck]).finally(() => clearTimeout(timer));
    } finally {
      client.destroy();
      server.close();
    }
  });
});

/** Records the memory each write's payload lies in: a slab's is SLAB_BYTES long. */
class SlabWatchingDevice extends MemoryDevice {
  readonly payloadBuffers: number[] = [];
  override write(offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
    this.payloadBuffers.push(data.buffer.byteLength);
    return super.write(offset, data, opts);
  }
}

describe.each(['clear', 'TLS'] as const)('a server reading into slabs (%s)', (how) => {
  it('writes what the client sent while later requests recycle slabs around a held write', async () => {
    const MiB = 1024 * 1024;
    const dev = new SlabWatchingDevice({ size: 128 * MiB });
    const pki = how === 'TLS' ? makeTlsMaterial() : null;
    const material = pki ? loadTlsMaterial({ cert: pki.serverCert, key: pki.serverKey }) : null;
    const server = new NbdServer({
      exports: new StaticExports('disk').add('disk', dev, 'test disk'),
      maxConnections: 0,
      ...(material ? { tls: () => ({ mode: 'require' as const, material, exportNeedsTls: () => true }) } : {}),
    });
    const addr = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
    let client = await RawClient.connect(addr.kind === 'tcp' ? addr.port : 0);
    try {
      await client.handshake();
      if (pki) {
        // STARTTLS, then the rest over TLS: the server reads the decrypted bytes into its slabs too.
        expect((await client.option(NBD.OPT_STARTTLS)).map((r) => r.type)).toEqual([NBD.REP_ACK]);
        const t = tls.connect({ socket: client.socket, ca: readFileSync(pki.caCert, 'utf8'), servername: 'localhost' });
        await once(t, 'secureConnect');
        client = RawClient.over(t);
      }
      await client.go('disk');
      const fill = (n: number, seed: number): Buffer => {
        const b = Buffer.alloc(n);
        for (let i = 0; i < n; i++) b[i] = (i * 13 + seed) & 0xff;
        return b;
      };
      let cookie = 1n;
      let replies = 0;
      for (let round = 0; round < 3; round++) {
        // A 4 KiB write (one view of a slab, passed to the device as is) held in the device...
        const held = dev.hold('write');
        const small = fill(4096, round + 1);
        client.request({ type: NBD.CMD_WRITE, cookie: cookie++, offset: round * 4096, payload: small });
        await held.started;
        // ...while 48 MiB of other writes pass through the same connection's slabs.
        for (let i = 0; i < 48; i++) client.request({ type: NBD.CMD_WRITE, cookie: cookie++, offset: 16 * MiB + (i % 64) * MiB, payload: fill(MiB, 100 + i) });
        for (let i = 0; i < 48; i++) expect((await client.simpleReply()).error).toBe(0);
        held.release();
        expect((await client.simpleReply()).error).toBe(0);
        replies += 49;
        expect(dev.data.subarray(round * 4096, round * 4096 + 4096).equals(small)).toBe(true);
      }
      expect(replies).toBe(147);
      // Every 4 KiB payload (one TLS record, or in one read) was handed on as a view of a slab.
      const small = dev.payloadBuffers.filter((_, i) => dev.ops.filter((o) => o.op === 'write')[i]?.length === 4096);
      expect(small.length).toBe(3);
      expect(small.every((n) => n === SLAB_BYTES)).toBe(true);
    } finally {
      client.socket.destroy();
      await server.stop();
      if (pki) rmSync(pki.root, { recursive: true, force: true });
    }
  });
});

/** Holds every 4 KiB write until `open()`; counts the ones started. */
class GatedDevice extends MemoryDevice {
  smallStarted = 0;
  private gate!: () => void;
  private readonly opened = new Promise<void>((r) => (this.gate = r));
  open(): void {
    this.gate();
  }

  override async write(offset: number, data: Buffer, opts: WriteOptions): Promise<void> {
    if (data.length === 4096) {
      this.smallStarted++;
      await this.opened;
    }
    return super.write(offset, data, opts);
  }
}

describe('slabs pinned by held writes count against the memory budget', () => {
  it('a held 4 KiB WRITE holds its whole slab of the budget; held writes in many slabs stop the reading', async () => {
    const KiB = 1024;
    const BUDGET = 4 * SLAB_BYTES;
    const dev = new GatedDevice({ size: 64 * 1024 * KiB });
    const server = new NbdServer({ exports: new StaticExports('disk').add('disk', dev), maxConnections: 0, memoryBudget: BUDGET });
    const addr = await server.listen({ kind: 'tcp', host: '127.0.0.1', port: 0 });
    const client = await RawClient.connect(addr.kind === 'tcp' ? addr.port : 0);
    try {
      await client.handshake();
      await client.go('disk');
      let cookie = 1n;
      client.request({ type: NBD.CMD_WRITE, cookie: cookie++, offset: 0, payload: Buffer.alloc(4096, 1) });
      while (dev.smallStarted < 1) await new Promise((r) => setTimeout(r, 5));
      // Its slab, not its 4 KiB, and not both.
      expect(server.budgetUsed).toBe(SLAB_BYTES);
      // Each further 4 KiB write after a write longer than a slab: every one pins a slab of its own.
      const SMALL = 12;
      for (let i = 1; i < SMALL; i++) {
        client.request({ type: NBD.CMD_WRITE, cookie: cookie++, offset: 8 * 1024 * KiB + i * 512 * KiB, payload: Buffer.alloc(SLAB_BYTES + 4 * KiB, 2) });
        client.request({ type: NBD.CMD_WRITE, cookie: cookie++, offset: i * 4096, payload: Buffer.alloc(4096, 1) });
      }
      // The padding writes land; reading stops once the pinned slabs spend the budget.
      for (let i = 1; i < 4; i++) expect((await client.simpleReply()).error).toBe(0);
      await new Promise((r) => setTimeout(r, 300));
      expect(dev.smallStarted).toBeGreaterThanOrEqual(3);
      expect(dev.smallStarted).toBeLessThan(SMALL);
      expect(server.budgetUsed).toBeLessThanOrEqual(BUDGET + 2 * SLAB_BYTES);
      dev.open();
      let answered = 3;
      while (answered < 2 * SMALL - 1) {
        expect((await client.simpleReply()).error).toBe(0);
        answered++;
      }
      expect(dev.smallStarted).toBe(SMALL);
      for (let i = 0; i < SMALL; i++) expect(dev.data[i * 4096]).toBe(1);
      while (server.budgetUsed > 0) await new Promise((r) => setTimeout(r, 5));
    } finally {
      client.socket.destroy();
      await server.stop();
    }
  });
});
