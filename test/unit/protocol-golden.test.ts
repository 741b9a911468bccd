// Golden bytes for every NBD message in both directions (spec doc/proto.md; digest in
// shared/reference/nbd-notes.md), written out by hand field by field, then decode(encode(x))
// round trips over seeded random values.
import { describe, expect, it } from 'vitest';
import { ProtocolError, orThrow } from '../../src/protocol/errors.ts';
import {
  ClientFlag, Cmd, CmdFlag, HandshakeFlag, Info, NbdErrno, Opt, Rep, ReplyFlag, ReplyType,
} from '../../src/protocol/constants.ts';
import { InboundDecoder } from '../../src/protocol/decoder.ts';
import {
  decodeExportNameReply, decodeGreeting, decodeInfo, decodeInfoRequest, decodeMetaContextRequest,
  decodeOptionHeader, decodeOptionReply, decodeRepMetaContext, decodeRepServer, encodeClientFlags,
  encodeExportNameReply, encodeGreeting, encodeInfo, encodeInfoRequest, encodeMetaContextRequest,
  encodeOption, encodeOptionReply, encodeRepMetaContext, encodeRepServer, type InfoReply,
} from '../../src/protocol/handshake.ts';
import {
  decodeChunkHeader, decodeChunkPayload, decodeRequestHeader, decodeSimpleReply, encodeBlockStatus,
  encodeChunkHeader, encodeErrorChunk, encodeOffsetDataHeader, encodeOffsetHole, encodeRequestHeader,
  encodeSimpleReply, OFFSET_SATURATED, type RequestHeader,
} from '../../src/protocol/transmission.ts';
import { withSeeds } from '../helpers/prng.ts';

/** Joins hex fields (one per line, each with its comment) into one hex string. */
const hex = (...fields: string[]): string => fields.join('').replace(/\s+/g, '');
const bytes = (...fields: string[]): Buffer => Buffer.from(hex(...fields), 'hex');
const ascii = (s: string): string => Buffer.from(s, 'utf8').toString('hex');

const COOKIE = bytes('0102030405060708');
const OPTION_REPLY_MAGIC = '0003e889045565a9';
const ROUND_TRIPS = 300;

describe('server -> client golden bytes', () => {
  it('greeting', () => {
    const g = encodeGreeting(HandshakeFlag.FixedNewstyle | HandshakeFlag.NoZeroes);
    expect(g.toString('hex')).toBe(hex(
      '4e42444d41474943', // NBDMAGIC "NBDMAGIC"
      '49484156454f5054', // IHAVEOPT "IHAVEOPT"
      '0003', //             handshake flags: FIXED_NEWSTYLE | NO_ZEROES
    ));
    expect(decodeGreeting(g)).toEqual({ flags: 3 });
    expect(decodeGreeting(bytes('4e42444d41474943', '0000000000420281', '0003'))).toBeInstanceOf(ProtocolError); // oldstyle magic
    expect(decodeGreeting(g.subarray(0, 17))).toBeInstanceOf(ProtocolError);
  });

  it('option reply ACK', () => {
    const r = encodeOptionReply(Opt.GO, Rep.ACK);
    expect(r.toString('hex')).toBe(hex(
      OPTION_REPLY_MAGIC, // option reply magic
      '00000007', //         option: GO
      '00000001', //         reply type: ACK
      '00000000', //         length 0
    ));
    expect(decodeOptionReply(r)).toEqual({ reply: { opt: Opt.GO, type: Rep.ACK, data: Buffer.alloc(0) }, next: 20 });
  });

  it('option reply SERVER (LIST entry)', () => {
    const data = encodeRepServer('disk', 'd1');
    const r = encodeOptionReply(Opt.LIST, Rep.SERVER, data);
    expect(r.toString('hex')).toBe(hex(
      OPTION_REPLY_MAGIC,
      '00000003', //      option: LIST
      '00000002', //      reply type: SERVER
      '0000000a', //      length 10
      '00000004', //      name length 4
      ascii('disk'), //   name
      ascii('d1'), //     description (the rest)
    ));
    expect(decodeRepServer(orThrow(decodeOptionReply(r)).reply.data)).toEqual({ name: 'disk', description: 'd1' });
  });

  it('option reply INFO: EXPORT, NAME, DESCRIPTION, BLOCK_SIZE', () => {
    const cases: [InfoReply, string][] = [
      [{ type: Info.EXPORT, size: 2 ** 32, flags: 0x048d }, hex(
        '0000', //             info type: EXPORT
        '0000000100000000', // size 4 GiB
        '048d', //             transmission flags
      )],
      [{ type: Info.NAME, name: 'disk' }, hex('0001', ascii('disk'))], // NAME, then the name
      [{ type: Info.DESCRIPTION, description: 'hi' }, hex('0002', ascii('hi'))], // DESCRIPTION, text
      [{ type: Info.BLOCK_SIZE, minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 }, hex(
        '0003', //     info type: BLOCK_SIZE
        '00000001', // minimum 1
        '00001000', // preferred 4096
        '02000000', // maximum 32 MiB
      )],
    ];
    for (const [info, payload] of cases) {
      const r = encodeOptionReply(Opt.INFO, Rep.INFO, encodeInfo(info));
      const len = (payload.length / 2).toString(16).padStart(8, '0');
      expect(r.toString('hex')).toBe(hex(OPTION_REPLY_MAGIC, '00000006' /* INFO */, '00000003' /* REP_INFO */, len, payload));
      expect(decodeInfo(orThrow(decodeOptionReply(r)).reply.data)).toEqual(info);
    }
  });

  it('option reply META_CONTEXT', () => {
    const r = encodeOptionReply(Opt.SET_META_CONTEXT, Rep.META_CONTEXT, encodeRepMetaContext(1, 'base:allocation'));
    expect(r.toString('hex')).toBe(hex(
      OPTION_REPLY_MAGIC,
      '0000000a', //                option: SET_META_CONTEXT
      '00000004', //                reply type: META_CONTEXT
      '00000013', //                length 19
      '00000001', //                context id 1
      ascii('base:allocation'), //  context name
    ));
    expect(decodeRepMetaContext(orThrow(decodeOptionReply(r)).reply.data)).toEqual({ id: 1, name: 'base:allocation' });
  });

  it('every option error reply type', () => {
    const errors: [number, string][] = [
      [Rep.ERR_UNSUP, '80000001'], [Rep.ERR_POLICY, '80000002'], [Rep.ERR_INVALID, '80000003'],
      [Rep.ERR_PLATFORM, '80000004'], [Rep.ERR_TLS_REQD, '80000005'], [Rep.ERR_UNKNOWN, '80000006'],
      [Rep.ERR_SHUTDOWN, '80000007'], [Rep.ERR_BLOCK_SIZE_REQD, '80000008'], [Rep.ERR_TOO_BIG, '80000009'],
      [Rep.ERR_EXT_HEADER_REQD, '8000000a'],
    ];
    for (const [type, wire] of errors) {
      const r = encodeOptionReply(Opt.STARTTLS, type, Buffer.from('no'));
      expect(r.toString('hex')).toBe(hex(
        OPTION_REPLY_MAGIC,
        '00000005', // option: STARTTLS
        wire, //       error type (bit 31 set)
        '00000002', // length 2
        ascii('no'), // message
      ));
      expect(orThrow(decodeOptionReply(r)).reply.type).toBe(type);
    }
  });

  it('EXPORT_NAME reply with and without the 124 zeroes', () => {
    const withZeroes = encodeExportNameReply(2 ** 30, 0x0d8d, false);
    expect(withZeroes.toString('hex')).toBe(hex(
      '0000000040000000', // export size 1 GiB
      '0d8d', //             transmission flags
      '00'.repeat(124), //   reserved zeroes (client did not set NO_ZEROES)
    ));
    const without = encodeExportNameReply(2 ** 30, 0x0d8d, true);
    expect(without.toString('hex')).toBe(hex('0000000040000000', '0d8d'));
    expect(decodeExportNameReply(withZeroes)).toEqual({ size: 2 ** 30, flags: 0x0d8d });
    expect(decodeExportNameReply(without)).toEqual({ size: 2 ** 30, flags: 0x0d8d });
  });

  it('simple reply', () => {
    const r = encodeSimpleReply(NbdErrno.EINVAL, COOKIE);
    expect(r.toString('hex')).toBe(hex(
      '67446698', //         simple reply magic
      '00000016', //         error 22 EINVAL
      '0102030405060708', // cookie, copied from the request
    ));
    expect(decodeSimpleReply(r)).toEqual({ errno: 22, cookie: COOKIE });
    expect(decodeSimpleReply(bytes('668e33ef', '00000000', '0102030405060708'))).toBeInstanceOf(ProtocolError);
  });

  it('structured chunk OFFSET_DATA header (data travels separately)', () => {
    const h = encodeOffsetDataHeader(ReplyFlag.DONE, COOKIE, 0x1000, 512);
    expect(h.toString('hex')).toBe(hex(
      '668e33ef', //         structured reply magic
      '0001', //             flags: DONE
      '0001', //             type: OFFSET_DATA
      '0102030405060708', // cookie
      '00000208', //         length 8 + 512
      '0000000000001000', // offset 4096 (the 512 data bytes follow)
    ));
    const data = Buffer.alloc(512, 0xab);
    const whole = Buffer.concat([h, data]);
    expect(decodeChunkHeader(whole)).toEqual({ flags: 1, type: ReplyType.OFFSET_DATA, cookie: COOKIE, length: 520 });
    expect(decodeChunkPayload(ReplyType.OFFSET_DATA, whole.subarray(20))).toEqual({ type: ReplyType.OFFSET_DATA, offset: 4096, data });
  });

  it('structured chunk OFFSET_HOLE', () => {
    const c = encodeOffsetHole(0, COOKIE, 2 ** 40, 0x10000);
    expect(c.toString('hex')).toBe(hex(
      '668e33ef', '0000', //  magic, flags: none (more chunks follow)
      '0002', //              type: OFFSET_HOLE
      '0102030405060708', //  cookie
      '0000000c', //          length 12
      '0000010000000000', //  offset 2^40
      '00010000', //          hole size 64 KiB
    ));
    expect(decodeChunkPayload(ReplyType.OFFSET_HOLE, c.subarray(20))).toEqual({ type: ReplyType.OFFSET_HOLE, offset: 2 ** 40, size: 0x10000 });
  });

  it('structured chunk BLOCK_STATUS', () => {
    const c = encodeBlockStatus(ReplyFlag.DONE, COOKIE, 1, [{ length: 4096, flags: 3 }, { length: 0x3000, flags: 0 }]);
    expect(c.toString('hex')).toBe(hex(
      '668e33ef', '0001', //  magic, flags: DONE
      '0005', //              type: BLOCK_STATUS (5, not the reference nbd.h's 3)
      '0102030405060708', //  cookie
      '00000014', //          length 4 + 2 * 8
      '00000001', //          context id 1 (base:allocation)
      '00001000', '00000003', // 4096 bytes HOLE|ZERO
      '00003000', '00000000', // 12288 bytes data
    ));
    expect(decodeChunkPayload(ReplyType.BLOCK_STATUS, c.subarray(20))).toEqual({
      type: ReplyType.BLOCK_STATUS, contextId: 1, descriptors: [{ length: 4096, flags: 3 }, { length: 0x3000, flags: 0 }],
    });
  });

  it('structured chunks ERROR and ERROR_OFFSET', () => {
    const e = encodeErrorChunk(ReplyFlag.DONE, COOKIE, NbdErrno.EIO, 'oops');
    expect(e.toString('hex')).toBe(hex(
      '668e33ef', '0001', //  magic, flags: DONE
      '8001', //              type: ERROR
      '0102030405060708', //  cookie
      '0000000a', //          length 6 + 4
      '00000005', //          error EIO
      '0004', //              message length
      ascii('oops'), //       message
    ));
    const eo = encodeErrorChunk(ReplyFlag.DONE, COOKIE, NbdErrno.ENOSPC, 'full', 0x2000);
    expect(eo.toString('hex')).toBe(hex(
      '668e33ef', '0001',
      '8002', //              type: ERROR_OFFSET
      '0102030405060708',
      '00000012', //          length 6 + 4 + 8
      '0000001c', //          error ENOSPC
      '0004', ascii('full'),
      '0000000000002000', //  offset of the failure
    ));
    expect(decodeChunkPayload(ReplyType.ERROR, e.subarray(20))).toEqual({ type: ReplyType.ERROR, errno: 5, message: 'oops' });
    expect(decodeChunkPayload(ReplyType.ERROR_OFFSET, eo.subarray(20))).toEqual({ type: ReplyType.ERROR_OFFSET, errno: 28, message: 'full', offset: 0x2000 });
  });

  it('an error message longer than 256 bytes is cut, and the chunk stays well-formed', () => {
    const e = encodeErrorChunk(ReplyFlag.DONE, COOKIE, NbdErrno.EIO, 'x'.repeat(1000));
    expect(e.readUInt32BE(16)).toBe(6 + 256);
    expect(e.readUInt16BE(24)).toBe(256);
    expect(e.length).toBe(20 + 6 + 256);
  });

  it('structured chunk NONE', () => {
    const c = encodeChunkHeader(ReplyFlag.DONE, ReplyType.NONE, COOKIE, 0);
    expect(c.toString('hex')).toBe(hex('668e33ef', '0001' /* DONE */, '0000' /* NONE */, '0102030405060708', '00000000' /* length 0 */));
    expect(decodeChunkPayload(ReplyType.NONE, Buffer.alloc(0))).toEqual({ type: ReplyType.NONE });
    expect(decodeChunkPayload(ReplyType.NONE, Buffer.alloc(1))).toBeInstanceOf(ProtocolError);
  });
});

describe('client -> server golden bytes', () => {
  it('client flags, as the server decoder reads them', () => {
    const b = encodeClientFlags(ClientFlag.FixedNewstyle | ClientFlag.NoZeroes);
    expect(b.toString('hex')).toBe(hex('00000003' /* C_FIXED_NEWSTYLE | C_NO_ZEROES */));
    const got: number[] = [];
    const d = new InboundDecoder({
      onClientFlags: (f) => got.push(f), onOption: () => {}, onRequest: () => {}, onProtocolError: () => {},
    });
    d.push(bytes('00000003'));
    expect(got).toEqual([3]);
  });

  it('option header', () => {
    const o = encodeOption(Opt.EXPORT_NAME, Buffer.from('disk'));
    expect(o.toString('hex')).toBe(hex(
      '49484156454f5054', // IHAVEOPT
      '00000001', //         option: EXPORT_NAME
      '00000004', //         length 4
      ascii('disk'), //      data: the raw name, no length prefix
    ));
    expect(decodeOptionHeader(o)).toEqual({ opt: 1, length: 4 });
    expect(decodeOptionHeader(bytes('49484156454f5055', '00000001', '00000000'))).toMatchObject({ code: 'NBD_ERR_BAD_MAGIC' });
    expect(encodeOption(Opt.ABORT).toString('hex')).toBe(hex('49484156454f5054', '00000002', '00000000'));
  });

  it('INFO/GO request', () => {
    const d = encodeInfoRequest('disk', [Info.BLOCK_SIZE, Info.NAME]);
    expect(d.toString('hex')).toBe(hex(
      '00000004', ascii('disk'), // name length, name
      '0002', //                     2 info requests
      '0003', '0001', //             BLOCK_SIZE, NAME
    ));
    expect(decodeInfoRequest(d)).toEqual({ name: 'disk', infos: [3, 1] });
    expect(encodeInfoRequest('', []).toString('hex')).toBe(hex('00000000', '0000')); // default export, none
    expect(decodeInfoRequest(bytes('00000000', '0000'))).toEqual({ name: '', infos: [] });
  });

  it('malformed INFO/GO requests decode to a ProtocolError', () => {
    expect(decodeInfoRequest(bytes('00000004', ascii('disk')))).toBeInstanceOf(ProtocolError); //           count missing
    expect(decodeInfoRequest(bytes('00000009', ascii('disk'), '0000'))).toBeInstanceOf(ProtocolError); //   name overruns
    expect(decodeInfoRequest(bytes('00000004', ascii('disk'), '0001'))).toBeInstanceOf(ProtocolError); //   info type missing
    expect(decodeInfoRequest(bytes('00000004', ascii('disk'), '0000', '00'))).toBeInstanceOf(ProtocolError); // trailing byte
    expect(decodeInfoRequest(bytes('00000000', '00'))).toBeInstanceOf(ProtocolError); //                    short
  });

  it('meta context request', () => {
    const d = encodeMetaContextRequest('disk', ['base:allocation', 'base:']);
    expect(d.toString('hex')).toBe(hex(
      '00000004', ascii('disk'), //              export name
      '00000002', //                             2 queries
      '0000000f', ascii('base:allocation'), //   query 1
      '00000005', ascii('base:'), //             query 2
    ));
    expect(decodeMetaContextRequest(d)).toEqual({ exportName: 'disk', queries: ['base:allocation', 'base:'] });
    expect(decodeMetaContextRequest(bytes('00000000', '00000000'))).toEqual({ exportName: '', queries: [] });
    expect(decodeMetaContextRequest(bytes('00000000', '00000001'))).toBeInstanceOf(ProtocolError); //               query missing
    expect(decodeMetaContextRequest(bytes('00000000', '00000001', '00000005', ascii('base')))).toBeInstanceOf(ProtocolError); // short query
    expect(decodeMetaContextRequest(bytes('00000000', '00000000', '00'))).toBeInstanceOf(ProtocolError); //         trailing byte
    expect(decodeMetaContextRequest(bytes('00000000', '00000fff'))).toBeInstanceOf(ProtocolError); //               too many queries
  });

  it('request header', () => {
    const h: RequestHeader = { flags: CmdFlag.FUA, type: Cmd.WRITE, cookie: COOKIE, offset: 0x123456789, length: 4096 };
    const b = encodeRequestHeader(h);
    expect(b.toString('hex')).toBe(hex(
      '25609513', //         request magic
      '0001', //             command flags: FUA
      '0001', //             type: WRITE
      '0102030405060708', // cookie
      '0000000123456789', // offset
      '00001000', //         length 4096 (payload follows)
    ));
    expect(decodeRequestHeader(b)).toEqual(h);
  });

  it('request header: bad magic is reported, offsets beyond 2^53 saturate, 2^53 - 1 is exact', () => {
    expect(decodeRequestHeader(bytes('25609514', '0000', '0000', '0102030405060708', '0000000000000000', '00000000'))).toMatchObject({ code: 'NBD_ERR_BAD_MAGIC' });
    expect(decodeRequestHeader(bytes('25609513', '0000', '0000', '0102030405060708', '0020000000000000', '00000200'))).toMatchObject({ offset: OFFSET_SATURATED, length: 512 });
    expect(decodeRequestHeader(bytes('25609513', '0000', '0000', '0102030405060708', 'ffffffffffffffff', '00000200'))).toMatchObject({ offset: OFFSET_SATURATED });
    const max = decodeRequestHeader(bytes('25609513', '0000', '0000', '0102030405060708', '001fffffffffffff', '00000200'));
    expect(max).toMatchObject({ offset: Number.MAX_SAFE_INTEGER, length: 512 });
  });
});

describe('malformed server -> client payloads decode to a ProtocolError', () => {
  it('info and chunk payloads with wrong lengths', () => {
    expect(decodeInfo(bytes('0000', '0000000000000001'))).toBeInstanceOf(ProtocolError); //                  EXPORT too short
    expect(decodeInfo(bytes('0003', '00000001', '00001000'))).toBeInstanceOf(ProtocolError); //               BLOCK_SIZE too short
    expect(decodeInfo(bytes('0009'))).toBeInstanceOf(ProtocolError); //                                       unknown info type
    expect(decodeChunkPayload(ReplyType.OFFSET_DATA, bytes('0000000000000000'))).toBeInstanceOf(ProtocolError); // no data byte
    expect(decodeChunkPayload(ReplyType.OFFSET_HOLE, bytes('0000000000000000', '000000'))).toBeInstanceOf(ProtocolError);
    expect(decodeChunkPayload(ReplyType.BLOCK_STATUS, bytes('00000001'))).toBeInstanceOf(ProtocolError); //   no descriptor
    expect(decodeChunkPayload(ReplyType.BLOCK_STATUS, bytes('00000001', '00001000', '000000'))).toBeInstanceOf(ProtocolError);
    expect(decodeChunkPayload(ReplyType.ERROR, bytes('00000005', '0004', ascii('oo')))).toBeInstanceOf(ProtocolError); // short message
    expect(decodeChunkPayload(0x7777, Buffer.alloc(4))).toBeInstanceOf(ProtocolError);
  });
});

describe('decode(encode(x)) round trips over seeded random values', () => {
  it('handshake messages', () => withSeeds('handshake round trips', (rng) => {
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const flags = rng.int(0, 0xffff);
      expect(decodeGreeting(encodeGreeting(flags))).toEqual({ flags });

      const opt = rng.u32();
      const type = rng.u32();
      const data = rng.bytes(rng.int(0, 64));
      const rep = encodeOptionReply(opt, type, data);
      expect(decodeOptionReply(rep)).toEqual({ reply: { opt, type, data }, next: 20 + data.length });
      // An option reply decoded at an offset inside a longer stream, and an incomplete one.
      const two = Buffer.concat([rep, rep]);
      expect(orThrow(decodeOptionReply(two, rep.length)).next).toBe(two.length);
      expect(decodeOptionReply(rep.subarray(0, rep.length - 1))).toBeInstanceOf(ProtocolError);

      const o = encodeOption(opt, data);
      expect(decodeOptionHeader(o)).toEqual({ opt, length: data.length });
      expect(o.subarray(16)).toEqual(data);

      const name = rng.ascii(40);
      const description = rng.ascii(40);
      expect(decodeRepServer(encodeRepServer(name, description))).toEqual({ name, description });
      const id = rng.u32();
      expect(decodeRepMetaContext(encodeRepMetaContext(id, name))).toEqual({ id, name });

      const infos = Array.from({ length: rng.int(0, 8) }, () => rng.int(0, 0xffff));
      expect(decodeInfoRequest(encodeInfoRequest(name, infos))).toEqual({ name, infos });
      const queries = Array.from({ length: rng.int(0, 6) }, () => rng.ascii(30));
      expect(decodeMetaContextRequest(encodeMetaContextRequest(name, queries))).toEqual({ exportName: name, queries });

      const size = rng.u53();
      const tflags = rng.int(0, 0xffff);
      const noZeroes = rng.bool();
      const enr = encodeExportNameReply(size, tflags, noZeroes);
      expect(enr.length).toBe(noZeroes ? 10 : 134);
      expect(decodeExportNameReply(enr)).toEqual({ size, flags: tflags });

      const info = rng.pick<() => InfoReply>([
        () => ({ type: Info.EXPORT, size, flags: tflags }),
        () => ({ type: Info.NAME, name }),
        () => ({ type: Info.DESCRIPTION, description }),
        () => ({ type: Info.BLOCK_SIZE, minimum: rng.u32(), preferred: rng.u32(), maximum: rng.u32() }),
      ])();
      expect(decodeInfo(encodeInfo(info))).toEqual(info);
    }
  }));

  it('transmission messages', () => withSeeds('transmission round trips', (rng) => {
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const cookie = rng.bytes(8);
      const h: RequestHeader = { flags: rng.int(0, 0xffff), type: rng.int(0, 0xffff), cookie, offset: rng.u53(), length: rng.u32() };
      expect(decodeRequestHeader(encodeRequestHeader(h))).toEqual(h);

      const errno = rng.u32();
      expect(decodeSimpleReply(encodeSimpleReply(errno, cookie))).toEqual({ errno, cookie });

      const flags = rng.int(0, 0xffff);
      const offset = rng.u53();
      const data = rng.bytes(rng.int(1, 100));
      const od = Buffer.concat([encodeOffsetDataHeader(flags, cookie, offset, data.length), data]);
      expect(decodeChunkHeader(od)).toEqual({ flags, type: ReplyType.OFFSET_DATA, cookie, length: 8 + data.length });
      expect(decodeChunkPayload(ReplyType.OFFSET_DATA, od.subarray(20))).toEqual({ type: ReplyType.OFFSET_DATA, offset, data });

      const size = rng.u32();
      const hole = encodeOffsetHole(flags, cookie, offset, size);
      expect(decodeChunkHeader(hole)).toEqual({ flags, type: ReplyType.OFFSET_HOLE, cookie, length: 12 });
      expect(decodeChunkPayload(ReplyType.OFFSET_HOLE, hole.subarray(20))).toEqual({ type: ReplyType.OFFSET_HOLE, offset, size });

      const descriptors = Array.from({ length: rng.int(1, 10) }, () => ({ length: rng.u32(), flags: rng.u32() }));
      const contextId = rng.u32();
      const bs = encodeBlockStatus(flags, cookie, contextId, descriptors);
      expect(orThrow(decodeChunkHeader(bs)).length).toBe(bs.length - 20);
      expect(decodeChunkPayload(ReplyType.BLOCK_STATUS, bs.subarray(20))).toEqual({ type: ReplyType.BLOCK_STATUS, contextId, descriptors });

      const message = rng.ascii(80);
      const withOffset = rng.bool();
      const ec = encodeErrorChunk(flags, cookie, errno, message, withOffset ? offset : undefined);
      const ch = orThrow(decodeChunkHeader(ec));
      expect(ch.length).toBe(ec.length - 20);
      expect(decodeChunkPayload(ch.type, ec.subarray(20))).toEqual(withOffset
        ? { type: ReplyType.ERROR_OFFSET, errno, message, offset }
        : { type: ReplyType.ERROR, errno, message });
    }
  }));
});
