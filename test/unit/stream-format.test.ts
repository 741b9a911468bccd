// The snapshot stream codec (protocol/stream.md): golden bytes, round trips through the mirror
// decoder under every split of the input, unknown records skipped or refused by their critical
// flag, and every cut and every flipped byte refused.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import {
  FLAG_CRITICAL, PREAMBLE_LEN, RECORD_HEADER_LEN, StreamDecoder, StreamErrorCode, StreamFormatError, StreamRec, StreamWriter,
  encodePreamble, encodeRecord, type StreamEvent, type StreamHeader,
} from '../../src/backup/stream-format.ts';
import { Prng } from '../helpers/prng.ts';

const header: StreamHeader = {
  volume: 'vm1', size: 1 << 20, chunkSize: 65536, snapshot: 's2', guid: '00112233445566778899aabbccddeeff',
  createdMs: 1_790_000_000_000, description: 'nightly', base: { name: 's1', guid: 'ffeeddccbbaa99887766554433221100' },
};

function sample(): Buffer[] {
  const w = new StreamWriter();
  return [
    ...w.begin(header),
    ...w.data(0, Buffer.from('hello world')),
    ...w.zero(4096, 8192, false),
    ...w.zero(65536, 65536, true),
    ...w.data(200_000, Buffer.alloc(500, 0xab)),
    ...w.end(),
  ];
}

function decodeAll(parts: Buffer[]): StreamEvent[] | StreamFormatError {
  const d = new StreamDecoder();
  const out: StreamEvent[] = [];
  for (const p of parts) {
    const r = d.push(p);
    if (r instanceof StreamFormatError) return r;
    out.push(...r);
  }
  return d.end() ?? out;
}

/** Events with data as hex, for comparison. */
function plain(evs: StreamEvent[] | StreamFormatError): unknown {
  if (evs instanceof StreamFormatError) return evs;
  return evs.map((e) => (e.kind === 'data' ? { ...e, data: e.data.toString('hex') } : e));
}

describe('stream codec', () => {
  it('writes the documented preamble and record header (golden bytes)', () => {
    expect(encodePreamble().toString('hex')).toBe(
      '534e41505354524d' // "SNAPSTRM"
      + '0001' + '0000' // version 1.0
      + crc32(Buffer.from('534e41505354524d00010000', 'hex')).toString(16).padStart(8, '0'));
    const [h, p] = encodeRecord(StreamRec.Zero, FLAG_CRITICAL, Buffer.from('00000000000010000000000000002000', 'hex'));
    expect(h.subarray(0, 8).toString('hex')).toBe(
      '0003' // type ZERO
      + '0001' // flags: critical
      + '00000010'); // payload length 16
    expect(h.readUInt32BE(8)).toBe(crc32(p, crc32(h.subarray(0, 8))));
  });

  it('round-trips through the decoder, whole and split at every byte', () => {
    const whole = Buffer.concat(sample());
    const expected = plain(decodeAll([whole]));
    expect(expected).toEqual([
      { kind: 'begin', header },
      { kind: 'data', offset: 0, data: Buffer.from('hello world').toString('hex') },
      { kind: 'zero', offset: 4096, length: 8192, hole: false },
      { kind: 'zero', offset: 65536, length: 65536, hole: true },
      { kind: 'data', offset: 200_000, data: 'ab'.repeat(500) },
      { kind: 'end', totals: { records: 5, dataBytes: 511, zeroBytes: 73728 } },
    ]);
    for (let i = 1; i < whole.length; i++) {
      expect(plain(decodeAll([whole.subarray(0, i), whole.subarray(i)])), `split at ${i}`).toEqual(expected);
    }
    expect(plain(decodeAll([...whole].map((b) => Buffer.from([b]))))).toEqual(expected);
  });

  it('decodes random splits into many pieces to the same events (seeded)', () => {
    const seed = Number(process.env.SNAPNBD_SEED ?? Date.now() % 1e9);
    const rnd = new Prng(seed);
    const whole = Buffer.concat(sample());
    const expected = plain(decodeAll([whole]));
    for (let round = 0; round < 200; round++) {
      const parts: Buffer[] = [];
      for (let at = 0; at < whole.length;) {
        const n = rnd.int(1, 700);
        parts.push(whole.subarray(at, at + n));
        at += n;
      }
      expect(plain(decodeAll(parts)), `seed ${seed} round ${round}`).toEqual(expected);
    }
  });

  it('skips an unknown record without the critical flag, and refuses one with it', () => {
    // A record type this reader does not know, spliced in by a "newer writer": the END's hash and
    // counts are built over the bytes as sent.
    const forged = (flags: number): Buffer => {
      const w = new StreamWriter();
      const body = Buffer.concat([...w.begin(header), ...w.data(0, Buffer.from('abc')), ...encodeRecord(77, flags, Buffer.from('from the future'))]);
      const e = Buffer.alloc(24 + 32);
      e.writeUInt32BE(3, 4); // records: BEGIN, DATA, the unknown one
      e.writeUInt32BE(3, 12); // data bytes
      createHash('sha256').update(body).digest().copy(e, 24);
      return Buffer.concat([body, ...encodeRecord(StreamRec.End, FLAG_CRITICAL, e)]);
    };
    expect(plain(decodeAll([forged(0)]))).toEqual([
      { kind: 'begin', header },
      { kind: 'data', offset: 0, data: Buffer.from('abc').toString('hex') },
      { kind: 'skipped', type: 77, length: 15 },
      { kind: 'end', totals: { records: 3, dataBytes: 3, zeroBytes: 0 } },
    ]);
    const bad = decodeAll([forged(FLAG_CRITICAL)]);
    expect(bad).toBeInstanceOf(StreamFormatError);
    expect((bad as StreamFormatError).code).toBe(StreamErrorCode.Unsupported);
  });

  it('refuses a stream cut at any byte', () => {
    const whole = Buffer.concat(sample());
    for (let i = 0; i < whole.length; i++) {
      const r = decodeAll([whole.subarray(0, i)]);
      expect(r, `cut at ${i}`).toBeInstanceOf(StreamFormatError);
      expect((r as StreamFormatError).code, `cut at ${i}`).toBe(StreamErrorCode.Truncated);
    }
  });

  it('refuses a stream with any one byte flipped', () => {
    const whole = Buffer.concat(sample());
    for (let i = 0; i < whole.length; i++) {
      const b = Buffer.from(whole);
      b.writeUInt8(b.readUInt8(i) ^ 0x10, i);
      const r = decodeAll([b]);
      expect(r, `flip at ${i}`).toBeInstanceOf(StreamFormatError);
    }
  });

  it('refuses bytes after END, a newer major version, a record past the size, and reports ABORT', () => {
    const whole = Buffer.concat(sample());
    expect((decodeAll([whole, Buffer.from([0])]) as StreamFormatError).code).toBe(StreamErrorCode.Corrupt);

    const v2 = Buffer.from(whole);
    v2.writeUInt16BE(2, 8);
    v2.writeUInt32BE(crc32(v2.subarray(0, 12)), 12);
    expect((decodeAll([v2]) as StreamFormatError).code).toBe(StreamErrorCode.Unsupported);

    const w = new StreamWriter();
    const begin = w.begin({ ...header, size: 4096 });
    const past = encodeRecord(StreamRec.Zero, FLAG_CRITICAL, Buffer.from('00000000000000000000000000002000', 'hex'));
    expect((decodeAll([...begin, ...past]) as StreamFormatError).message).toMatch(/past the volume's end/);

    const w2 = new StreamWriter();
    const r = decodeAll([...w2.begin(header), ...w2.data(0, Buffer.from('x')), ...w2.abort('read failed: EIO')]);
    expect(r).toBeInstanceOf(StreamFormatError);
    expect((r as StreamFormatError).code).toBe(StreamErrorCode.Aborted);
    expect((r as StreamFormatError).message).toMatch(/read failed: EIO/);
    expect(PREAMBLE_LEN + RECORD_HEADER_LEN).toBe(28);
  });

  it('writer refuses extents out of order or past the end', () => {
    const w = new StreamWriter();
    w.begin(header);
    w.data(4096, Buffer.alloc(10));
    expect(() => w.data(0, Buffer.alloc(1))).toThrow(RangeError);
    expect(() => w.zero(1 << 20, 1, false)).toThrow(RangeError);
  });
});
