// A Session over an in-memory duplex pair with StaticExports and memory devices: handshakes,
// every command's reply (simple and structured), errors, ordering, flow control and closing.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  Cmd, CmdFlag, MAX_PAYLOAD, MAX_REQUEST, NbdErrno, Opt, Rep, ReplyFlag, ReplyType, StateFlag, TxFlag,
} from '../../src/protocol/constants.ts';
import { encodeClientFlags, encodeInfoRequest, encodeOption } from '../../src/protocol/handshake.ts';
import { encodeRequestHeader } from '../../src/protocol/transmission.ts';
import { MemoryBudget } from '../../src/server/memory-budget.ts';
import { REPLY_SLAB_BYTES } from '../../src/server/dispatch.ts';
import { SLAB_READ_MAX } from '../../src/server/reply-buffers.ts';
import { Phase, SPARSE_READ_MIN, type Session } from '../../src/server/session.ts';
import { StaticExports } from '../../src/server/static-exports.ts';
import { setLogLevel } from '../../src/util/log.ts';
import { MemoryDevice, type MemoryDeviceOptions } from '../helpers/memory-device.ts';
import { startSession, type Reply, type Wire } from '../fuzz/wire.ts';

const MiB = 1024 * 1024;
const open: { session: Session; client: Wire }[] = [];

beforeAll(() => setLogLevel('error'));
afterEach(async () => {
  for (const { session } of open.splice(0)) session.destroy();
});

function setup(devOpts: MemoryDeviceOptions = {}, sessionOpts: Parameters<typeof startSession>[1] = {}) {
  const dev = new MemoryDevice({ size: MiB, ...devOpts });
  const exports = new StaticExports('disk').add('disk', dev, 'test disk');
  const s = startSession(exports, sessionOpts);
  open.push(s);
  return { dev, exports, ...s };
}

/** Waits a few event-loop turns so anything that could happen has happened. */
async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}

function expectSimple(r: Reply, cookie: string, errno: number): void {
  expect(r).toMatchObject({ kind: 'simple', cookie, errno });
}

function expectErrorChunk(r: Reply, cookie: string, errno: number): void {
  expect(r).toMatchObject({ kind: 'chunk', cookie, flags: ReplyFlag.DONE, type: ReplyType.ERROR });
  expect(r.kind === 'chunk' && r.payload.type === ReplyType.ERROR && r.payload.errno).toBe(errno);
}

const pattern = (n: number, seed: number): Buffer => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b.writeUInt8((i * 31 + seed) & 0xff, i);
  return b;
};

describe('handshakes', () => {
  it('GO without structured replies, simple READ, DISC closes cleanly and releases the lease', async () => {
    const { client, session, exports, dev } = setup();
    dev.preload(4096, pattern(100, 1));
    const h = await client.handshake();
    expect(h.size).toBe(MiB);
    expect(h.flags & TxFlag.SEND_DF).toBe(0);
    expect(h.flags & TxFlag.READ_ONLY).toBe(0);
    expect(exports.counters('disk')!.connections).toBe(1);
    const c = client.request({ type: Cmd.READ, offset: 4096, length: 100 });
    const r = await client.reply();
    expectSimple(r, c, 0);
    expect(r.kind === 'simple' && r.data).toEqual(pattern(100, 1));
    client.request({ type: Cmd.DISC });
    expect(await client.eof()).toBe(true);
    await session.closed;
    expect(session.phase).toBe(Phase.Dead);
    expect(exports.counters('disk')!.connections).toBe(0);
  });

  it('GO with structured replies and base:allocation advertises DF; reads come as chunks', async () => {
    const { client, dev } = setup();
    dev.preload(0, pattern(512, 2));
    const h = await client.handshake({ structured: true, metaContext: true });
    expect(h.flags & TxFlag.SEND_DF).toBe(TxFlag.SEND_DF);
    expect(h.infos.map((i) => i.type)).toEqual([0, 1, 2, 3]);
    const c = client.request({ type: Cmd.READ, offset: 0, length: 512 });
    const chunks = await client.structuredReply();
    expect(chunks.map((x) => [x.cookie, x.flags, x.type])).toEqual([[c, ReplyFlag.DONE, ReplyType.OFFSET_DATA]]);
    expect(chunks[0]!.payload).toEqual({ type: ReplyType.OFFSET_DATA, offset: 0, data: pattern(512, 2) });
  });

  it.each([true, false])('EXPORT_NAME with NO_ZEROES %s: the reply length is exact, then requests work', async (noZeroes) => {
    const { client, dev } = setup();
    dev.preload(10, Buffer.from('hello'));
    const h = await client.handshake({ via: 'export-name', noZeroes });
    expect(h).toMatchObject({ size: MiB });
    expect(h.flags & TxFlag.HAS_FLAGS).toBe(1);
    const c = client.request({ type: Cmd.READ, offset: 10, length: 5 });
    const r = await client.reply();
    expectSimple(r, c, 0);
    expect(r.kind === 'simple' && r.data?.toString()).toBe('hello');
  });

  it('read-only export: READ_ONLY set, no write-side flags', async () => {
    const { client } = setup({ readOnly: true });
    const h = await client.handshake({ structured: true });
    expect(h.flags & (TxFlag.READ_ONLY | TxFlag.SEND_FUA | TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES | TxFlag.SEND_FAST_ZERO)).toBe(TxFlag.READ_ONLY);
  });

  it('ABORT is acknowledged and the connection closes', async () => {
    const { client, session } = setup();
    await client.greeting();
    client.send(encodeClientFlags(3));
    client.option(Opt.ABORT);
    expect((await client.optionReplies()).map((r) => r.type)).toEqual([Rep.ACK]);
    expect(await client.eof()).toBe(true);
    await session.closed;
  });

  it('unknown client flags close the connection', async () => {
    const { client, session } = setup();
    await client.greeting();
    client.send(encodeClientFlags(0x10));
    expect(await client.eof()).toBe(true);
    await session.closed;
  });

  it('handshake timeout closes a silent client', async () => {
    const { client, session } = setup({}, { handshakeTimeoutMs: 50 });
    await client.greeting();
    await session.closed;
    expect(await client.eof()).toBe(true);
  });

  it('each export a LIST names extends the handshake deadline (describing them takes round trips)', async () => {
    const dev = new MemoryDevice({ size: MiB });
    const exports = new StaticExports('e0');
    for (let i = 0; i < 20; i++) exports.add(`e${i}`, dev);
    const s = startSession(exports, { handshakeTimeoutMs: 100, handshakeMsPerListedExport: 20 });
    open.push(s);
    await s.client.greeting();
    s.client.send(encodeClientFlags(3));
    s.client.option(Opt.LIST);
    expect(await s.client.optionReplies()).toHaveLength(21);
    // 100 ms + 20 x 20 ms = 500 ms: still negotiating well after the bare 100 ms.
    await new Promise((r) => setTimeout(r, 250));
    s.client.option(Opt.INFO, encodeInfoRequest('e19', []));
    expect((await s.client.optionReplies()).at(-1)!.type).toBe(Rep.ACK);
    await s.session.closed; // and cut off at the extended deadline
    expect(await s.client.eof()).toBe(true);
  });

  it('GO to an unknown export gets ERR_UNKNOWN and the client may try again', async () => {
    const { client } = setup();
    await client.greeting();
    client.send(encodeClientFlags(3));
    client.option(Opt.GO, encodeInfoRequest('nope', []));
    expect((await client.optionReplies()).map((r) => r.type >>> 0)).toEqual([Rep.ERR_UNKNOWN]);
    client.option(Opt.GO, encodeInfoRequest('', []));
    expect((await client.optionReplies()).map((r) => r.type)).toEqual([Rep.INFO, Rep.INFO, Rep.INFO, Rep.INFO, Rep.ACK]);
    const c = client.request({ type: Cmd.FLUSH });
    expectSimple(await client.reply(), c, 0);
  });
});

describe('every command (simple replies)', () => {
  it('WRITE, READ, FLUSH, TRIM, WRITE_ZEROES (NO_HOLE, FAST_ZERO, FUA), CACHE', async () => {
    const { client, dev } = setup();
    await client.handshake();
    const data = pattern(10000, 3);
    let c = client.request({ type: Cmd.WRITE, flags: CmdFlag.FUA, offset: 5000 }, data);
    expectSimple(await client.reply(), c, 0);
    expect(dev.data.subarray(5000, 15000)).toEqual(data);
    c = client.request({ type: Cmd.READ, offset: 5000, length: 10000 });
    const r = await client.reply();
    expectSimple(r, c, 0);
    expect(r.kind === 'simple' && r.data).toEqual(data);
    c = client.request({ type: Cmd.FLUSH });
    expectSimple(await client.reply(), c, 0);
    c = client.request({ type: Cmd.TRIM, offset: 8192, length: 4096 });
    expectSimple(await client.reply(), c, 0);
    expect(dev.data.subarray(8192, 12288).equals(Buffer.alloc(4096))).toBe(true);
    c = client.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO | CmdFlag.FUA, offset: 5000, length: 100 });
    expectSimple(await client.reply(), c, 0);
    expect(dev.data.subarray(5000, 5100).equals(Buffer.alloc(100))).toBe(true);
    c = client.request({ type: Cmd.CACHE, offset: 0, length: 65536 });
    expectSimple(await client.reply(), c, 0);
    expect(dev.ops.map((o) => o.op)).toEqual(['write', 'read', 'flush', 'trim', 'zero', 'cache']);
    expect(dev.ops[0]).toMatchObject({ fua: true, offset: 5000, length: 10000 });
    expect(dev.ops[3]).toMatchObject({ fua: false, offset: 8192, length: 4096 });
    expect(dev.ops[4]).toMatchObject({ fua: true, noHole: true, fast: true, offset: 5000, length: 100 });
  });
});

describe('structured replies', () => {
  async function structured(devOpts: MemoryDeviceOptions = {}) {
    const s = setup({ size: 4 * MiB, ...devOpts });
    await s.client.handshake({ structured: true, metaContext: true });
    return s;
  }

  it('a READ over holes gives OFFSET_HOLE + OFFSET_DATA chunks covering exactly the range, DONE on the last only', async () => {
    const { client, dev } = await structured();
    dev.preload(64 * 1024 + 100, pattern(5000, 4)); //   data in blocks 16..17
    dev.preload(200 * 1024, pattern(4096, 5)); //        block 50
    await dev.zero(300 * 1024, 8192, { fua: false, noHole: true, fast: false }); // allocated zeros
    const offset = 60 * 1024 + 17;
    const length = 320 * 1024;
    expect(length).toBeGreaterThanOrEqual(SPARSE_READ_MIN);
    const c = client.request({ type: Cmd.READ, offset, length });
    const chunks = await client.structuredReply();
    expect(chunks.every((x) => x.cookie === c)).toBe(true);
    expect(chunks.map((x) => x.flags)).toEqual([...chunks.slice(1).map(() => 0), ReplyFlag.DONE]);
    // Chunks in order here; they must tile [offset, offset+length) with no gap or overlap.
    const got = Buffer.alloc(length, 0xee);
    let pos = offset;
    let holes = 0;
    for (const ch of chunks) {
      const p = ch.payload;
      if (p.type === ReplyType.OFFSET_DATA) {
        expect(p.offset).toBe(pos);
        p.data.copy(got, p.offset - offset);
        pos += p.data.length;
      } else if (p.type === ReplyType.OFFSET_HOLE) {
        expect(p.offset).toBe(pos);
        got.fill(0, p.offset - offset, p.offset - offset + p.size);
        pos += p.size;
        holes++;
      } else throw new Error(`unexpected chunk ${p.type}`);
    }
    expect(pos).toBe(offset + length);
    expect(got).toEqual(dev.data.subarray(offset, offset + length));
    expect(holes).toBeGreaterThanOrEqual(3);
    expect(chunks.filter((x) => x.payload.type === ReplyType.OFFSET_DATA).length).toBeGreaterThanOrEqual(2);
  });

  it('DF gives exactly one OFFSET_DATA chunk even over holes', async () => {
    const { client, dev } = await structured();
    dev.preload(100 * 1024, pattern(3000, 6));
    const c = client.request({ type: Cmd.READ, flags: CmdFlag.DF, offset: 0, length: 256 * 1024 });
    const chunks = await client.structuredReply();
    expect(chunks.length).toBe(1);
    expect(chunks[0]).toMatchObject({ cookie: c, flags: ReplyFlag.DONE, type: ReplyType.OFFSET_DATA });
    const p = chunks[0]!.payload;
    expect(p.type === ReplyType.OFFSET_DATA && p.offset).toBe(0);
    expect(p.type === ReplyType.OFFSET_DATA && p.data.equals(dev.data.subarray(0, 256 * 1024))).toBe(true);
  });

  it('BLOCK_STATUS reports the truth; REQ_ONE gives one descriptor no longer than the request', async () => {
    const { client, dev } = await structured();
    dev.preload(8192, pattern(4096, 7));
    await dev.zero(16384, 4096, { fua: false, noHole: true, fast: false });
    const length = 64 * 1024;
    let c = client.request({ type: Cmd.BLOCK_STATUS, offset: 0, length });
    let chunks = await client.structuredReply();
    expect(chunks.length).toBe(1);
    expect(chunks[0]).toMatchObject({ cookie: c, flags: ReplyFlag.DONE, type: ReplyType.BLOCK_STATUS });
    const flagsOf = (e: { hole: boolean; zero: boolean }): number => (e.hole ? StateFlag.HOLE : 0) | (e.zero ? StateFlag.ZERO : 0);
    expect(chunks[0]!.payload).toEqual({
      type: ReplyType.BLOCK_STATUS, contextId: 1,
      descriptors: dev.extentsSync(0, length).map((e) => ({ length: e.length, flags: flagsOf(e) })),
    });
    expect(chunks[0]!.payload.type === ReplyType.BLOCK_STATUS && chunks[0]!.payload.descriptors.map((d) => d.flags))
      .toEqual([StateFlag.HOLE | StateFlag.ZERO, 0, StateFlag.HOLE | StateFlag.ZERO, StateFlag.ZERO, StateFlag.HOLE | StateFlag.ZERO]);
    for (const [offset, len] of [[0, 4096], [0, 100], [8192, 1 << 20], [4000, 300]] as const) {
      c = client.request({ type: Cmd.BLOCK_STATUS, flags: CmdFlag.REQ_ONE, offset, length: len });
      chunks = await client.structuredReply();
      const p = chunks[0]!.payload;
      if (p.type !== ReplyType.BLOCK_STATUS) throw new Error('expected BLOCK_STATUS');
      expect(p.descriptors.length).toBe(1);
      expect(p.descriptors[0]!.length).toBeGreaterThan(0);
      expect(p.descriptors[0]!.length).toBeLessThanOrEqual(len);
      expect(p.descriptors[0]!.flags).toBe(flagsOf(dev.extentsSync(offset, 1)[0]!));
    }
  });

  it('errors come as ERROR chunks with DONE; non-READ successes may be simple', async () => {
    const { client, dev } = await structured({ fastZero: false });
    let c = client.request({ type: Cmd.READ, offset: 4 * MiB - 10, length: 11 });
    expectErrorChunk(await client.reply(), c, NbdErrno.EINVAL);
    c = client.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.FAST_ZERO, offset: 0, length: 4096 });
    expectErrorChunk(await client.reply(), c, NbdErrno.ENOTSUP);
    dev.preload(0, Buffer.alloc(100, 1)); // data, so the sparse read does read
    dev.failNext('EIO', 'read');
    c = client.request({ type: Cmd.READ, offset: 0, length: 128 * 1024 });
    expectErrorChunk(await client.reply(), c, NbdErrno.EIO);
    dev.failNext('EIO', 'extents');
    c = client.request({ type: Cmd.READ, offset: 0, length: 128 * 1024 });
    expectErrorChunk(await client.reply(), c, NbdErrno.EIO);
    c = client.request({ type: Cmd.WRITE, offset: 0 }, Buffer.alloc(10, 1));
    expectSimple(await client.reply(), c, 0);
  });
});

describe('errors', () => {
  it('read past the end EINVAL, write past the end ENOSPC with its payload drained, zero-length EINVAL, TRIM past the end EINVAL', async () => {
    const { client, dev } = setup();
    await client.handshake();
    let c = client.request({ type: Cmd.READ, offset: MiB - 1, length: 2 });
    expectSimple(await client.reply(), c, NbdErrno.EINVAL);
    c = client.request({ type: Cmd.WRITE, offset: MiB - 100 }, Buffer.alloc(4096, 0x77));
    expectSimple(await client.reply(), c, NbdErrno.ENOSPC);
    c = client.request({ type: Cmd.WRITE, offset: 0 }, Buffer.from('after'));
    expectSimple(await client.reply(), c, 0);
    expect(dev.data.subarray(0, 5).toString()).toBe('after');
    expect(dev.data.subarray(MiB - 100).equals(Buffer.alloc(100))).toBe(true);
    c = client.request({ type: Cmd.READ, offset: 0, length: 0 });
    expectSimple(await client.reply(), c, NbdErrno.EINVAL);
    // TRIM discards nothing past the end: EINVAL, as nbdkit answers (differential interop test).
    c = client.request({ type: Cmd.TRIM, offset: MiB, length: 1 });
    expectSimple(await client.reply(), c, NbdErrno.EINVAL);
    c = client.request({ type: Cmd.WRITE_ZEROES, offset: MiB - 1, length: 2 });
    expectSimple(await client.reply(), c, NbdErrno.ENOSPC);
  });

  it('write, trim and zero on a read-only export EPERM (payload drained)', async () => {
    const { client, dev } = setup({ readOnly: true });
    await client.handshake();
    let c = client.request({ type: Cmd.WRITE, offset: 0 }, Buffer.alloc(1000, 1));
    expectSimple(await client.reply(), c, NbdErrno.EPERM);
    c = client.request({ type: Cmd.TRIM, offset: 0, length: 4096 });
    expectSimple(await client.reply(), c, NbdErrno.EPERM);
    c = client.request({ type: Cmd.WRITE_ZEROES, offset: 0, length: 4096 });
    expectSimple(await client.reply(), c, NbdErrno.EPERM);
    c = client.request({ type: Cmd.READ, offset: 0, length: 1000 });
    const r = await client.reply();
    expectSimple(r, c, 0);
    expect(r.kind === 'simple' && r.data?.equals(Buffer.alloc(1000))).toBe(true);
    expect(dev.ops.map((o) => o.op)).toEqual(['read']);
  });

  it('unknown command, unknown or inapplicable flags, FLUSH with a length, BLOCK_STATUS without a context: EINVAL', async () => {
    const { client, dev } = setup();
    await client.handshake();
    const cases: Parameters<Wire['request']>[0][] = [
      { type: 9, offset: 0, length: 0 },
      { type: 0x1234, offset: 0, length: 512 },
      { type: Cmd.READ, flags: 0x20, offset: 0, length: 512 }, //                 unknown flag bit
      { type: Cmd.READ, flags: CmdFlag.DF, offset: 0, length: 512 }, //           DF without structured replies
      { type: Cmd.TRIM, flags: CmdFlag.NO_HOLE, offset: 0, length: 512 }, //      NO_HOLE only on WRITE_ZEROES
      { type: Cmd.FLUSH, offset: 0, length: 512 },
      { type: Cmd.FLUSH, offset: 512, length: 0 },
      { type: Cmd.BLOCK_STATUS, offset: 0, length: 512 },
    ];
    for (const r of cases) {
      const c = client.request(r);
      expectSimple(await client.reply(), c, NbdErrno.EINVAL);
    }
    const c = client.request({ type: Cmd.WRITE, flags: CmdFlag.DF, offset: 0 }, Buffer.from('xyz'));
    expectSimple(await client.reply(), c, NbdErrno.EINVAL);
    expect(dev.ops).toEqual([]);
  });

  it('serves READ and WRITE above the advertised maximum up to MAX_REQUEST (48 MiB, DF too)', async () => {
    const { client, dev } = setup({ size: 80 * MiB });
    await client.handshake({ structured: true });
    const len = 48 * MiB;
    expect(len).toBeGreaterThan(MAX_PAYLOAD);
    const data = Buffer.alloc(len);
    for (let i = 0; i < len; i += 4096) data.writeUInt32LE(i, i);
    let c = client.request({ type: Cmd.WRITE, offset: 4096 }, data);
    expectSimple(await client.reply(), c, 0);
    c = client.request({ type: Cmd.READ, flags: CmdFlag.DF, offset: 4096, length: len });
    const r = await client.reply();
    expect(r.cookie).toBe(c);
    expect(r.kind === 'chunk' && r.payload.type === ReplyType.OFFSET_DATA && r.payload.data.equals(data)).toBe(true);
    c = client.request({ type: Cmd.READ, offset: 4096 + len - 8192, length: 8192 });
    const tail = await client.reply();
    expect(tail.kind === 'chunk' && tail.payload.type === ReplyType.OFFSET_DATA && tail.payload.data.equals(data.subarray(len - 8192))).toBe(true);
    expect(dev.ops.filter((o) => o.op === 'write').length).toBeGreaterThan(0);
  });

  it('a WRITE over MAX_REQUEST is refused EINVAL and its payload discarded; a READ EINVAL, with DF EOVERFLOW', async () => {
    const { client, dev } = setup({ size: 80 * MiB });
    await client.handshake({ structured: true });
    const big = MAX_REQUEST + 4096;
    let c = client.request({ type: Cmd.WRITE, offset: 0 }, Buffer.alloc(big, 0x33));
    let r = await client.reply();
    expect(r.kind === 'simple' ? r.errno : r.payload.type === ReplyType.ERROR && r.payload.errno).toBe(NbdErrno.EINVAL);
    expect(r.cookie).toBe(c);
    c = client.request({ type: Cmd.READ, offset: 0, length: big });
    expectErrorChunk(await client.reply(), c, NbdErrno.EINVAL);
    c = client.request({ type: Cmd.READ, flags: CmdFlag.DF, offset: 0, length: big });
    expectErrorChunk(await client.reply(), c, NbdErrno.EOVERFLOW);
    c = client.request({ type: Cmd.READ, offset: 0, length: 16 });
    r = await client.reply();
    expect(r.kind === 'chunk' && r.payload.type === ReplyType.OFFSET_DATA && r.payload.data.equals(Buffer.alloc(16))).toBe(true);
    expect(dev.ops.filter((o) => o.op === 'write')).toEqual([]);
  });

  it.each([
    ['EIO', 'read', NbdErrno.EIO],
    ['ENOSPC', 'write', NbdErrno.ENOSPC],
    ['EDQUOT', 'zero', NbdErrno.ENOSPC],
    ['EROFS', 'write', NbdErrno.EPERM],
    ['ENOMEM', 'flush', NbdErrno.ENOMEM],
    ['EBADF', 'trim', NbdErrno.EIO],
  ] as const)('storage fault %s on %s -> %s, and the session goes on', async (errno, op, nbd) => {
    const { client, dev } = setup();
    await client.handshake();
    dev.failNext(errno, op);
    const req: Record<typeof op, () => string> = {
      read: () => client.request({ type: Cmd.READ, offset: 0, length: 512 }),
      write: () => client.request({ type: Cmd.WRITE, offset: 0 }, Buffer.alloc(512, 1)),
      zero: () => client.request({ type: Cmd.WRITE_ZEROES, offset: 0, length: 512 }),
      flush: () => client.request({ type: Cmd.FLUSH }),
      trim: () => client.request({ type: Cmd.TRIM, offset: 0, length: 512 }),
    };
    const c = req[op]();
    expectSimple(await client.reply(), c, nbd);
    const c2 = req[op]();
    const r = await client.reply();
    expectSimple(r, c2, 0);
  });

  it('FAST_ZERO on a device that cannot zero fast: ENOTSUP, data untouched', async () => {
    const { client, dev } = setup({ fastZero: false });
    await client.handshake();
    dev.preload(0, Buffer.alloc(4096, 9));
    const c = client.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.FAST_ZERO, offset: 0, length: 4096 });
    expectSimple(await client.reply(), c, NbdErrno.ENOTSUP);
    expect(dev.data.readUInt8(100)).toBe(9);
  });

  // nbdkit and qemu-nbd write each reply synchronously, so a client that pipelines a valid option
  // and then garbage still gets the first answer. Here the replies sit corked until the next tick
  // and the protocol error's socket.destroy() discards them.
  it('a protocol error does not drop replies already queued for earlier options', async () => {
    const { client, session } = setup();
    await client.greeting();
    const bad = encodeOption(Opt.LIST);
    bad.writeUInt8(0, 0); // bad IHAVEOPT magic
    client.send(Buffer.concat([encodeClientFlags(3), encodeOption(Opt.LIST), bad]));
    await session.closed;
    const replies = [];
    try {
      for (;;) replies.push((await client.optionReply()).type);
    } catch {
      // EOF after the queued replies
    }
    expect(replies).toEqual([Rep.SERVER, Rep.ACK]);
  });

  it('a bad request magic closes only that session; another session keeps working', async () => {
    const dev = new MemoryDevice({ size: MiB });
    dev.preload(0, Buffer.from('still here'));
    const exports = new StaticExports('disk').add('disk', dev);
    const a = startSession(exports);
    const b = startSession(exports);
    open.push(a, b);
    await a.client.handshake();
    await b.client.handshake();
    const bad = encodeRequestHeader({ type: Cmd.READ, flags: 0, cookie: Buffer.alloc(8), offset: 0, length: 10 });
    bad.writeUInt32BE(0x25609514, 0);
    a.client.send(bad);
    await a.session.closed;
    expect(await a.client.eof()).toBe(true);
    const c = b.client.request({ type: Cmd.READ, offset: 0, length: 10 });
    const r = await b.client.reply();
    expectSimple(r, c, 0);
    expect(r.kind === 'simple' && r.data?.toString()).toBe('still here');
    expect(b.session.phase).toBe(Phase.Transmission);
    expect(exports.counters('disk')!.connections).toBe(1);
  });
});

describe('ordering and flow control', () => {
  it('a slow READ is answered after a later fast WRITE; cookies match', async () => {
    const { client, dev } = setup();
    await client.handshake();
    dev.preload(0, Buffer.from('old!'));
    const slow = dev.hold('read');
    const cRead = client.request({ type: Cmd.READ, offset: 0, length: 4, cookie: 0xaaaan });
    await slow.started;
    const cWrite = client.request({ type: Cmd.WRITE, offset: 4096, cookie: 0xbbbbn }, Buffer.from('new'));
    expectSimple(await client.reply(), cWrite, 0);
    slow.release();
    const r = await client.reply();
    expectSimple(r, cRead, 0);
    expect(r.kind === 'simple' && r.data?.toString()).toBe('old!');
  });

  it('FLUSH is answered only after its flush completes, and covers every write answered before it', async () => {
    const { client, dev } = setup();
    await client.handshake();
    for (let i = 0; i < 3; i++) {
      const c = client.request({ type: Cmd.WRITE, offset: i * 4096 }, Buffer.alloc(4096, i + 1));
      expectSimple(await client.reply(), c, 0);
    }
    expect(dev.durableWrites).toBe(0);
    const hold = dev.hold('flush');
    const cFlush = client.request({ type: Cmd.FLUSH });
    await hold.started;
    const cRead = client.request({ type: Cmd.READ, offset: 0, length: 1 });
    expectSimple(await client.reply(), cRead, 0); // the read overtakes the held flush
    hold.release();
    const r = await client.reply();
    expectSimple(r, cFlush, 0);
    expect(dev.durableWrites).toBe(3);
  });

  it('a FUA write is durable when answered', async () => {
    const { client, dev } = setup();
    await client.handshake();
    const c = client.request({ type: Cmd.WRITE, flags: CmdFlag.FUA, offset: 0 }, Buffer.alloc(10, 1));
    expectSimple(await client.reply(), c, 0);
    expect(dev.durableWrites).toBe(dev.resolvedWrites);
  });

  it.each([
    ['maxInFlight', { maxInFlight: 2 }],
    ['maxInFlightBytes', { maxInFlightBytes: 8192 }],
  ] as const)('the %s cap pauses reading until a request completes', async (_name, caps) => {
    const { client, dev } = setup({}, caps);
    await client.handshake();
    const holds = Array.from({ length: 5 }, () => dev.hold('read'));
    const cookies = Array.from({ length: 5 }, (_, i) => client.request({ type: Cmd.READ, offset: i * 4096, length: 4096 }));
    await holds[0]!.started;
    await holds[1]!.started;
    await settle();
    expect(dev.ops.length).toBe(2); // the third request is not read while two are in flight
    holds[0]!.release();
    expectSimple(await client.reply(), cookies[0]!, 0);
    await holds[2]!.started;
    await settle();
    expect(dev.ops.length).toBe(3);
    for (const h of holds) h.release();
    const got = new Set<string>();
    for (let i = 1; i < 5; i++) got.add((await client.reply()).cookie);
    expect(got).toEqual(new Set(cookies.slice(1)));
    expect(dev.maxRunning).toBe(2);
  });

  it('memory budget: a reply holds its bytes until the socket has taken it, then every byte comes back', async () => {
    const budget = new MemoryBudget(64 * MiB);
    const { client, server } = setup({}, { budget });
    await client.handshake();
    // Stand in for a full kernel buffer: the server end takes no chunk until told to.
    const stuck: (() => void)[] = [];
    let holding = true;
    const write = server._write.bind(server);
    server._write = (chunk, enc, cb) => {
      if (holding) stuck.push(() => write(chunk, enc, cb));
      else write(chunk, enc, cb);
    };
    // Small: their replies stay under the socket's high-water mark, so all eight are read.
    const cookies = Array.from({ length: 8 }, (_, i) => client.request({ type: Cmd.READ, offset: i * 512, length: 512 }));
    await settle();
    expect(budget.used).toBe(8 * 512); // answered, but not one reply has left
    holding = false;
    for (const go of stuck.splice(0)) go();
    const got = new Set<string>();
    for (let i = 0; i < 8; i++) got.add((await client.reply()).cookie);
    expect(got).toEqual(new Set(cookies));
    await settle();
    expect(budget.used).toBe(0);
  });

  it('stall timeout: a client whose socket blocks and drains for longer than it is kept; one that stops reading is dropped after it', async () => {
    const STALL_MS = 100;
    const { client, server, session } = setup({}, { stallTimeoutMs: STALL_MS });
    await client.handshake();
    // 64 KiB replies exceed the socket's high-water mark: each one blocks it, then it drains.
    const start = performance.now();
    while (performance.now() - start < 4 * STALL_MS) {
      const c = client.request({ type: Cmd.READ, offset: 0, length: 64 * 1024 });
      expectSimple(await client.reply(), c, 0);
    }
    expect(session.phase).toBe(Phase.Transmission);
    // Now the socket takes nothing: the client is dropped after STALL_MS of that.
    server._write = () => undefined;
    const blocked = performance.now();
    client.request({ type: Cmd.READ, offset: 0, length: 64 * 1024 });
    await session.closed;
    expect(performance.now() - blocked).toBeGreaterThanOrEqual(STALL_MS - 5);
  });

  it('short reads share a reply slab but never its bytes: concurrent reads of odd sizes each get their own range', async () => {
    const { client, dev } = setup();
    const image = pattern(MiB, 3);
    dev.preload(0, image);
    await client.handshake();
    const sizes = [1, 7, 4096, 5000, SLAB_READ_MAX, 300, SLAB_READ_MAX + 1];
    const want = new Map<string, Buffer>();
    let offset = 0;
    // Several slabs' worth (REPLY_SLAB_BYTES each), all in flight at once.
    for (let i = 0; offset < 3 * REPLY_SLAB_BYTES; i++) {
      const length = sizes[i % sizes.length]!;
      want.set(client.request({ type: Cmd.READ, offset, length }), image.subarray(offset, offset + length));
      offset += length + 13;
    }
    for (let i = 0; i < want.size; i++) {
      const r = await client.reply();
      expectSimple(r, r.cookie, 0);
      expect(r.kind === 'simple' && r.data?.equals(want.get(r.cookie)!)).toBe(true);
    }
  });

  it('DISC waits for in-flight requests, answers them, then closes', async () => {
    const { client, session, dev } = setup();
    await client.handshake();
    const hold = dev.hold('write');
    const c = client.request({ type: Cmd.WRITE, offset: 0 }, Buffer.from('last words'));
    await hold.started;
    client.request({ type: Cmd.DISC });
    client.request({ type: Cmd.READ, offset: 0, length: 1 }); // after DISC: ignored
    await settle();
    expect(session.phase).toBe(Phase.ClientDone);
    hold.release();
    expectSimple(await client.reply(), c, 0);
    expect(await client.eof()).toBe(true);
    await session.closed;
    expect(dev.data.subarray(0, 10).toString()).toBe('last words');
    expect(dev.ops.map((o) => o.op)).toEqual(['write']);
  });

  it('shutdown() stops reading, finishes in-flight requests, closes', async () => {
    const { client, session, dev } = setup();
    await client.handshake();
    const hold = dev.hold('read');
    const c = client.request({ type: Cmd.READ, offset: 0, length: 8 });
    await hold.started;
    const done = session.shutdown('test');
    await settle();
    client.request({ type: Cmd.READ, offset: 0, length: 8 }); // not read any more
    hold.release();
    expectSimple(await client.reply(), c, 0);
    expect(await client.eof()).toBe(true);
    await done;
    expect(dev.ops.length).toBe(1);
  });

  it('a revoked lease (forced rollback) closes the session after in-flight work', async () => {
    const { client, session, dev, exports } = setup();
    await client.handshake();
    const hold = dev.hold('write');
    const c = client.request({ type: Cmd.WRITE, offset: 0 }, Buffer.from('x'));
    await hold.started;
    exports.revokeAll('rollback');
    hold.release();
    expectSimple(await client.reply(), c, 0);
    expect(await client.eof()).toBe(true);
    await session.closed;
    expect(exports.counters('disk')!.connections).toBe(0);
  });

  it('shutdown() during the handshake drops the client; options while the server stops get ERR_SHUTDOWN', async () => {
    const a = setup();
    await a.client.greeting();
    await a.session.shutdown('stop');
    expect(a.session.phase).toBe(Phase.Dead);
    const b = setup({}, { shuttingDown: () => true });
    await b.client.greeting();
    b.client.send(encodeClientFlags(3));
    b.client.option(Opt.GO, encodeInfoRequest('disk', []));
    expect((await b.client.optionReplies()).map((r) => r.type >>> 0)).toEqual([Rep.ERR_SHUTDOWN]);
  });
});
