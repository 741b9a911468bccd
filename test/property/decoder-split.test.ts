// The inbound decoder is a pure resumable state machine: a valid client byte stream decodes to the
// same events whatever the chunking (pg-protocol "split buffer", ws "spanning multiple writes"),
// and pause()/resume() at any event neither loses nor reorders anything.
import { describe, expect, it } from 'vitest';
import { ClientFlag, Cmd, CmdFlag, Info, MAX_REQUEST, Opt } from '../../src/protocol/constants.ts';
import { InboundDecoder, PAYLOAD_VIEWS_MIN, type Payload } from '../../src/protocol/decoder.ts';
import { encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/protocol/handshake.ts';
import { encodeRequestHeader } from '../../src/protocol/transmission.ts';
import { Prng, withSeeds } from '../helpers/prng.ts';

const RANDOM_SPLITS = 300;
/** Split points sampled inside the oversize WRITE's discarded payload (too long to try them all). */
const DISCARD_EDGE_POINTS = 64;
const DISCARD_RANDOM_POINTS = 200;

type Event =
  | { e: 'flags'; flags: number }
  | { e: 'option'; opt: number; data: string }
  | { e: 'request'; type: number; flags: number; cookie: string; offset: number; length: number; payload: string | null }
  | { e: 'error'; code: string };

function cookie(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32BE(0xc0ffee00, 0);
  b.writeUInt32BE(n, 4);
  return b;
}

/** The client stream, plus the byte range of the oversize WRITE's payload. */
function buildStream(): { stream: Buffer; discardStart: number; discardEnd: number; expected: Event[] } {
  const rng = new Prng(12345); // fixed content: the splits are what varies
  const parts: Buffer[] = [];
  const expected: Event[] = [];
  let len = 0;
  const add = (b: Buffer): void => {
    parts.push(b);
    len += b.length;
  };
  add(encodeClientFlags(ClientFlag.FixedNewstyle | ClientFlag.NoZeroes));
  expected.push({ e: 'flags', flags: 3 });
  const options: [number, Buffer][] = [
    [Opt.STRUCTURED_REPLY, Buffer.alloc(0)], // zero-length
    [Opt.LIST, Buffer.alloc(0)], //             zero-length
    [Opt.SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation'])],
    [99, rng.bytes(300)], //                    unknown, with data to read past
    [Opt.INFO, encodeInfoRequest('disk', [Info.BLOCK_SIZE])],
    [Opt.GO, encodeInfoRequest('disk', [])],
  ];
  for (const [opt, data] of options) {
    add(encodeOption(opt, data));
    expected.push({ e: 'option', opt, data: data.toString('hex') });
  }
  let n = 0;
  const req = (type: number, flags: number, offset: number, length: number, payload?: Buffer): void => {
    const c = cookie(++n);
    add(encodeRequestHeader({ type, flags, cookie: c, offset, length }));
    if (payload) add(payload);
    expected.push({ e: 'request', type, flags, cookie: c.toString('hex'), offset, length, payload: payload ? payload.toString('hex') : null });
  };
  req(Cmd.READ, 0, 0, 4096);
  for (const size of [1, 7, 512, 4096, 9000]) req(Cmd.WRITE, CmdFlag.FUA, size * 3, size, rng.bytes(size));
  req(Cmd.WRITE, 0, 0, 0); // zero-length WRITE: no payload
  req(Cmd.FLUSH, 0, 0, 0);
  req(Cmd.BLOCK_STATUS, CmdFlag.REQ_ONE, 2 ** 40, 65536);
  req(Cmd.WRITE_ZEROES, CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO, 8192, 1 << 20);
  // Oversize WRITE: reported with a null payload, and its data discarded to keep framing.
  const big = MAX_REQUEST + 1;
  const bigCookie = cookie(++n);
  add(encodeRequestHeader({ type: Cmd.WRITE, flags: 0, cookie: bigCookie, offset: 0, length: big }));
  const discardStart = len;
  add(Buffer.alloc(big, 0x5a));
  const discardEnd = len;
  expected.push({ e: 'request', type: Cmd.WRITE, flags: 0, cookie: bigCookie.toString('hex'), offset: 0, length: big, payload: null });
  req(Cmd.TRIM, 0, 4096, 4096);
  req(Cmd.WRITE, 0, 100, 3, Buffer.from('abc'));
  req(Cmd.CACHE, 0, 0, 1 << 16);
  req(77, 0, 0, 0); // unknown command: decoded, the session refuses it
  req(Cmd.READ, CmdFlag.DF, Number.MAX_SAFE_INTEGER - 511, 512);
  req(Cmd.DISC, 0, 0, 0);
  return { stream: Buffer.concat(parts), discardStart, discardEnd, expected };
}

const S = buildStream();

/**
 * Decodes `chunks` and returns the events. The handler plays the session: GO enters transmission,
 * DISC kills the decoder. `pauseAt(i)` pauses after event i; paused decoders are resumed after the
 * next push (and at the end), and must deliver nothing while paused.
 */
function decode(chunks: Buffer[], pauseAt: (i: number) => boolean = () => false): Event[] {
  const events: Event[] = [];
  let paused = false;
  const d: InboundDecoder = new InboundDecoder({
    onClientFlags: (flags) => record({ e: 'flags', flags }),
    onOption: (opt, data) => {
      record({ e: 'option', opt, data: data.toString('hex') });
      if (opt === Opt.GO) d.startTransmission();
    },
    onRequest: (h, payload) => {
      record({
        e: 'request', type: h.type, flags: h.flags, cookie: h.cookie.toString('hex'), offset: h.offset, length: h.length,
        payload: payload ? joined(payload).toString('hex') : null,
      });
      if (h.type === Cmd.DISC) d.kill();
    },
    onProtocolError: (err) => record({ e: 'error', code: err.code }),
  });
  function record(ev: Event): void {
    if (paused) throw new Error(`event delivered while paused: ${JSON.stringify(ev).slice(0, 200)}`);
    events.push(ev);
    if (pauseAt(events.length - 1)) {
      paused = true;
      d.pause();
    }
  }
  const resume = (): void => {
    while (paused) {
      paused = false;
      d.resume();
    }
  };
  for (const c of chunks) {
    d.push(c);
    resume();
  }
  resume();
  // After DISC the decoder is dead: further bytes are ignored.
  d.push(encodeRequestHeader({ type: Cmd.READ, flags: 0, cookie: cookie(999), offset: 0, length: 1 }));
  return events;
}

function splitAt(points: number[]): Buffer[] {
  const sorted = [...new Set(points)].filter((p) => p > 0 && p < S.stream.length).sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of sorted) {
    out.push(S.stream.subarray(at, p));
    at = p;
  }
  out.push(S.stream.subarray(at));
  return out;
}

/** Compares without dumping 32 MiB of hex on failure. */
function expectSameEvents(got: Event[], what: string): void {
  expect(got.length, what).toBe(S.expected.length);
  for (let i = 0; i < got.length; i++) {
    if (JSON.stringify(got[i]) !== JSON.stringify(S.expected[i])) {
      expect({ what, index: i, event: JSON.stringify(got[i]).slice(0, 300) })
        .toEqual({ what, index: i, event: JSON.stringify(S.expected[i]).slice(0, 300) });
    }
  }
}

/** A payload's bytes in one buffer (the decoder hands a spanning payload on as views). */
function joined(p: Payload): Buffer {
  return Buffer.isBuffer(p) ? p : Buffer.concat(p);
}

describe('InboundDecoder under every split of a valid client stream', () => {
  it('decodes the whole stream in one chunk', () => {
    expectSameEvents(decode([S.stream]), 'one chunk');
    // The stream holds what the brief asks for: several options, zero-length ones, writes, DISC.
    expect(S.expected.filter((e) => e.e === 'option').length).toBe(6);
    expect(S.expected.filter((e) => e.e === 'request' && e.type === Cmd.WRITE).length).toBe(8);
  });

  it('every single split point outside the discarded payload; sampled points inside it', () => {
    let tried = 0;
    for (let p = 1; p < S.stream.length; p++) {
      if (p > S.discardStart + DISCARD_EDGE_POINTS && p < S.discardEnd - DISCARD_EDGE_POINTS) {
        p = S.discardEnd - DISCARD_EDGE_POINTS; // jump over the middle of the 32 MiB payload
      }
      expectSameEvents(decode(splitAt([p])), `split at ${p}`);
      tried++;
    }
    const rng = new Prng(7);
    for (let i = 0; i < DISCARD_RANDOM_POINTS; i++) {
      const p = rng.int(S.discardStart, S.discardEnd);
      expectSameEvents(decode(splitAt([p])), `split at ${p} (inside the discarded payload)`);
    }
    expect(tried).toBeGreaterThan(S.stream.length - S.discardEnd + S.discardStart - 2);
  });

  it('seeded random multi-splits', () => withSeeds('decoder multi-split', (rng) => {
    for (let i = 0; i < RANDOM_SPLITS; i++) {
      const k = rng.int(2, 40);
      const points = Array.from({ length: k }, () => rng.bool(0.2)
        ? rng.int(S.discardStart - 64, S.discardEnd + 64)
        : rng.bool(0.5) ? rng.int(1, S.discardStart) : rng.int(S.discardEnd, S.stream.length - 1));
      expectSameEvents(decode(splitAt(points)), `splits ${points.join(',')}`);
    }
  }));

  it('one byte at a time (the discarded payload in 64 KiB pieces)', () => {
    const chunks: Buffer[] = [];
    for (let p = 0; p < S.discardStart; p++) chunks.push(S.stream.subarray(p, p + 1));
    for (let p = S.discardStart; p < S.discardEnd; p += 65536) chunks.push(S.stream.subarray(p, Math.min(p + 65536, S.discardEnd)));
    for (let p = S.discardEnd; p < S.stream.length; p++) chunks.push(S.stream.subarray(p, p + 1));
    expectSameEvents(decode(chunks), 'byte by byte');
  });

  it('pause()/resume() after any event, under random splits, loses and reorders nothing', () => withSeeds('decoder pause/resume', (rng) => {
    for (let i = 0; i < 200; i++) {
      const points = Array.from({ length: rng.int(0, 20) }, () => rng.int(1, S.stream.length - 1));
      const p = rng.float();
      expectSameEvents(decode(splitAt(points), () => rng.bool(p)), `pause probability ${p}, splits ${points.join(',')}`);
    }
    // Pausing after every single event, fed in one chunk.
    expectSameEvents(decode([S.stream], () => true), 'pause after every event');
  }));

  it('a payload that spans chunks is handed on as views of those chunks, a short one as one copy', () => {
    const events: Payload[] = [];
    const d: InboundDecoder = new InboundDecoder({
      onClientFlags: () => {}, onOption: () => d.startTransmission(), onRequest: (_h, p) => { if (p) events.push(p); }, onProtocolError: () => {},
    });
    const big = PAYLOAD_VIEWS_MIN + 1000;
    const write = (n: number, len: number, fill: number): Buffer => Buffer.concat([
      encodeRequestHeader({ type: Cmd.WRITE, flags: 0, cookie: cookie(n), offset: 0, length: len }), Buffer.alloc(len, fill)]);
    const a = Buffer.concat([encodeClientFlags(1), encodeOption(Opt.GO, encodeInfoRequest('', [])),
      write(1, big, 0x11), write(2, big, 0x22), write(3, 1000, 0x33)]);
    const pushed: Buffer[] = [];
    const step = 33_333;
    for (let at = 0; at < a.length; at += step) {
      pushed.push(Buffer.from(a.subarray(at, at + step)));
      d.push(pushed[pushed.length - 1]!);
    }
    expect(events.map((p) => { const j = joined(p); return [j.length, j.readUInt8(0), j.readUInt8(j.length - 1)]; }))
      .toEqual([[big, 0x11, 0x11], [big, 0x22, 0x22], [1000, 0x33, 0x33]]);
  });

  it('a long payload that spans chunks is views of those chunks, not a copy', () => {
    const events: Payload[] = [];
    const d: InboundDecoder = new InboundDecoder({
      onClientFlags: () => {}, onOption: () => d.startTransmission(), onRequest: (_h, p) => { if (p) events.push(p); }, onProtocolError: () => {},
    });
    const len = 3 * PAYLOAD_VIEWS_MIN;
    const a = Buffer.concat([encodeClientFlags(1), encodeOption(Opt.GO, encodeInfoRequest('', [])),
      encodeRequestHeader({ type: Cmd.WRITE, flags: 0, cookie: cookie(1), offset: 0, length: len }), Buffer.alloc(len, 0x44)]);
    const pushed: Buffer[] = [];
    for (let at = 0; at < a.length; at += 65_536) {
      pushed.push(Buffer.from(a.subarray(at, at + 65_536)));
      d.push(pushed[pushed.length - 1]!);
    }
    expect(events.length).toBe(1);
    const p = events[0]!;
    expect(Buffer.isBuffer(p)).toBe(false);
    for (const v of p as Buffer[]) expect(pushed.some((c) => c.buffer === v.buffer)).toBe(true);
    expect(joined(p)).toEqual(Buffer.alloc(len, 0x44));
  });

  it('a bad request magic after valid requests is one protocol error, then nothing', () => {
    const bad = Buffer.from(S.stream.subarray(0, S.discardStart));
    // Corrupt the magic of the first request after GO (the READ).
    const firstReq = S.stream.indexOf(Buffer.from('25609513', 'hex'), 4);
    bad.writeUInt32BE(0x25609514, firstReq);
    for (const p of [1, firstReq, firstReq + 2, firstReq + 28]) {
      const events: Event[] = [];
      const d: InboundDecoder = new InboundDecoder({
        onClientFlags: (flags) => events.push({ e: 'flags', flags }),
        onOption: (opt, data) => { events.push({ e: 'option', opt, data: data.toString('hex') }); if (opt === Opt.GO) d.startTransmission(); },
        onRequest: () => events.push({ e: 'request', type: -1, flags: 0, cookie: '', offset: 0, length: 0, payload: null }),
        onProtocolError: (err) => events.push({ e: 'error', code: err.code }),
      });
      d.push(bad.subarray(0, p));
      d.push(bad.subarray(p));
      expect(events.slice(0, 7)).toEqual(S.expected.slice(0, 7));
      expect(events.slice(7)).toEqual([{ e: 'error', code: 'NBD_ERR_BAD_MAGIC' }]);
      expect(d.dead).toBe(true);
      expect(d.bufferedBytes).toBe(0);
    }
  });
});
