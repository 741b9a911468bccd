// Byte transcripts named by scenario, replayed into a Session over an in-memory pair, then seeded
// random mutations and tails of them. Invariants: nothing throws out of the session, the session
// answers every request it accepted or closes on a protocol error, the connection always closes
// once the client has sent everything, nothing is written after the session is dead, and every
// frame the server writes is well-formed (a greeting, option replies, an export-name reply, then
// simple or structured replies whose cookies, lengths and offsets match the requests).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/protocol/errors.ts';
import {
  Cmd, EXPORT_NAME_REPLY_LEN, EXPORT_NAME_ZEROES, GREETING_LEN, NbdErrno, OPTION_REPLY_MAGIC, Opt, ReplyFlag, ReplyType,
  SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, MAX_OPTIONS, OPTIONS_PER_LISTED_EXPORT,
} from '../../src/protocol/constants.ts';
import { encodeGreeting } from '../../src/protocol/handshake.ts';
import { decodeChunkPayload, type RequestHeader } from '../../src/protocol/transmission.ts';
import { SERVER_HANDSHAKE_FLAGS } from '../../src/server/negotiate.ts';
import { Phase, Session } from '../../src/server/session.ts';
import { StaticExports } from '../../src/server/static-exports.ts';
import { setLogLevel } from '../../src/util/log.ts';
import { MemoryDevice } from '../helpers/memory-device.ts';
import { Prng, withSeeds } from '../helpers/prng.ts';
import { FUZZ_DISK_SIZE, TRANSCRIPT_DIR, scenarios, type Scenario } from './make-transcripts.ts';
import { duplexPair } from './wire.ts';

/** Bounds of one run; raise them locally to hunt longer (SNAPNBD_FUZZ_CASES, SNAPNBD_FUZZ_MS). */
const MAX_CASES = Number(process.env.SNAPNBD_FUZZ_CASES ?? 2000);
const TIME_LIMIT_MS = Number(process.env.SNAPNBD_FUZZ_MS ?? 20_000);
const FIXED_CASES = 300;
/** A session that has all its input and no slow storage closes well within this. */
const CLOSE_TIMEOUT_MS = 5_000;
const KNOWN_ERRNOS = new Set<number>(Object.values(NbdErrno).filter((e) => e !== 0));

interface Accepted { cookie: string; type: number; offset: number; length: number }

interface Outcome {
  problems: string[];
  protocolError: string | null;
  accepted: number;
  answered: number;
  optionReplies: { opt: number; type: number }[];
  enteredTransmission: boolean;
}

const uncaught: unknown[] = [];
const onUncaught = (e: unknown): void => void uncaught.push(e);

beforeAll(() => {
  setLogLevel('error');
  process.on('unhandledRejection', onUncaught);
});
afterAll(() => {
  process.off('unhandledRejection', onUncaught);
});

/** Replays `chunks` of client bytes into a fresh session and checks every invariant. */
async function runCase(chunks: Buffer[]): Promise<Outcome> {
  const disk = new MemoryDevice({ size: FUZZ_DISK_SIZE });
  const snap = new MemoryDevice({ size: FUZZ_DISK_SIZE, readOnly: true });
  const exports = new StaticExports('disk').add('disk', disk, 'disk').add('snap', snap, 'snap');
  const [server, client] = duplexPair();
  const session = new Session(server, { exports, label: 'fuzz', isShuttingDown: () => false, handshakeTimeoutMs: CLOSE_TIMEOUT_MS * 2 });
  const problems: string[] = [];
  const accepted: Accepted[] = [];
  let protocolError: string | null = null;
  let noZeroes = false;
  let exportNameAt: number | null = null; // number of option replies sent before the EXPORT_NAME reply
  let optionCount = 0;

  // Spies: the decoder calls these on the session object, so wrapping the instance sees every event.
  const onClientFlags = session.onClientFlags.bind(session);
  session.onClientFlags = (flags) => {
    noZeroes = (flags & 2) !== 0;
    onClientFlags(flags);
  };
  const onOption = session.onOption.bind(session);
  session.onOption = (opt, data) => {
    const before = session.phase;
    onOption(opt, data);
    optionCount++;
    if (opt === Opt.EXPORT_NAME && before === Phase.Options && session.phase === Phase.Transmission) exportNameAt = optionCount;
  };
  const onRequest = session.onRequest.bind(session);
  session.onRequest = (h: RequestHeader, payload) => {
    if (session.phase === Phase.Transmission && h.type !== Cmd.DISC) {
      accepted.push({ cookie: h.cookie.toString('hex'), type: h.type, offset: h.offset, length: h.length });
    }
    onRequest(h, payload);
  };
  const onProtocolError = session.onProtocolError.bind(session);
  session.onProtocolError = (e) => {
    protocolError = e.code;
    onProtocolError(e);
  };
  const write = server.write.bind(server) as (...a: unknown[]) => boolean;
  (server as { write: (...a: unknown[]) => boolean }).write = (...a: unknown[]) => {
    if (session.phase === Phase.Dead) problems.push('write after the session was dead');
    return write(...a);
  };

  const out: Buffer[] = [];
  client.on('data', (c: Buffer) => out.push(c));
  client.on('end', () => client.end());
  client.on('error', () => {});
  const clientClosed = new Promise<void>((r) => client.on('close', () => r()));

  session.start();
  for (const c of chunks) client.write(c);
  client.end();

  let timer: NodeJS.Timeout | undefined;
  const closed = await Promise.race([
    session.closed.then(() => true),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), CLOSE_TIMEOUT_MS))),
  ]);
  clearTimeout(timer);
  if (!closed) {
    problems.push(`session did not close within ${CLOSE_TIMEOUT_MS} ms (phase ${session.phase}, ${accepted.length} accepted)`);
    session.destroy();
  }
  await clientClosed;
  expect(exports.counters('disk')!.connections + exports.counters('snap')!.connections).toBe(0);

  const parsed = checkOutput(Buffer.concat(out), { noZeroes, exportNameAt, accepted, protocolError }, problems);
  if (protocolError === null && closed && parsed.pending > 0) {
    problems.push(`${parsed.pending} accepted request(s) never answered, and no protocol error`);
  }
  return {
    problems, protocolError, accepted: accepted.length, answered: parsed.answered,
    optionReplies: parsed.optionReplies, enteredTransmission: parsed.enteredTransmission || exportNameAt !== null,
  };
}

/** Parses everything the server wrote; appends a description of each malformation to `problems`. */
function checkOutput(
  b: Buffer,
  k: { noZeroes: boolean; exportNameAt: number | null; accepted: Accepted[]; protocolError: string | null },
  problems: string[],
): { pending: number; answered: number; optionReplies: { opt: number; type: number }[]; enteredTransmission: boolean } {
  const optionReplies: { opt: number; type: number }[] = [];
  let at = 0;
  let answered = 0;
  const pending = new Map<string, Accepted[]>();
  for (const a of k.accepted) pending.set(a.cookie, [...(pending.get(a.cookie) ?? []), a]);
  const pendingCount = (): number => [...pending.values()].reduce((n, l) => n + l.length, 0);
  const done = (pendingLeft: number, enteredTransmission: boolean) => ({ pending: pendingLeft, answered, optionReplies, enteredTransmission });

  if (b.length < GREETING_LEN || !b.subarray(0, GREETING_LEN).equals(encodeGreeting(SERVER_HANDSHAKE_FLAGS))) {
    problems.push(`no greeting: ${b.subarray(0, GREETING_LEN).toString('hex')}`);
    return done(pendingCount(), false);
  }
  at = GREETING_LEN;
  let finalOptionReplies = 0; // options answered with ACK/error: EXPORT_NAME's reply comes after them
  while (b.length - at >= 8 && b.readBigUInt64BE(at) === OPTION_REPLY_MAGIC) {
    if (k.exportNameAt !== null && finalOptionReplies >= k.exportNameAt) break;
    if (b.length - at < 20) { problems.push('truncated option reply header'); return done(pendingCount(), false); }
    const len = b.readUInt32BE(at + 16);
    if (b.length - at - 20 < len) { problems.push('truncated option reply data'); return done(pendingCount(), false); }
    const type = b.readUInt32BE(at + 12);
    optionReplies.push({ opt: b.readUInt32BE(at + 8), type });
    if (type === 1 || (type & 0x80000000) !== 0) finalOptionReplies++;
    at += 20 + len;
  }
  let entered = false;
  if (k.exportNameAt !== null) {
    const n = EXPORT_NAME_REPLY_LEN + (k.noZeroes ? 0 : EXPORT_NAME_ZEROES);
    // A protocol error right after EXPORT_NAME destroys the socket: queued replies may be dropped
    // whole (see the report), never cut in half.
    if (b.length === at && k.protocolError !== null) return done(0, true);
    if (b.length - at < n) { problems.push('truncated EXPORT_NAME reply'); return done(pendingCount(), true); }
    if (Number(b.readBigUInt64BE(at)) !== FUZZ_DISK_SIZE) problems.push(`EXPORT_NAME size ${b.readBigUInt64BE(at)}`);
    if (!k.noZeroes && !b.subarray(at + 10, at + n).equals(Buffer.alloc(EXPORT_NAME_ZEROES))) problems.push('EXPORT_NAME zeroes not zero');
    at += n;
    entered = true;
  } else {
    entered = optionReplies.length > 0 && optionReplies[optionReplies.length - 1]!.opt === Opt.GO
      && optionReplies[optionReplies.length - 1]!.type === 1;
  }
  const take = (cookie: string, what: string): Accepted | null => {
    const list = pending.get(cookie);
    if (!list || list.length === 0) { problems.push(`${what} for unknown or finished cookie ${cookie}`); return null; }
    if (list.length > 1 && list.some((a) => a.type !== list[0]!.type || a.length !== list[0]!.length)) return 'ambiguous' as never;
    return list[0]!;
  };
  const finish = (cookie: string): void => {
    const list = pending.get(cookie)!;
    list.shift();
    if (list.length === 0) pending.delete(cookie);
    answered++;
  };
  while (at < b.length) {
    if (b.length - at < 4) { problems.push('trailing partial reply magic'); break; }
    const magic = b.readUInt32BE(at);
    if (magic === SIMPLE_REPLY_MAGIC) {
      if (b.length - at < 16) { problems.push('truncated simple reply'); break; }
      const errno = b.readUInt32BE(at + 4);
      const cookie = b.subarray(at + 8, at + 16).toString('hex');
      const req = take(cookie, 'simple reply');
      if (req === null) break;
      if ((req as unknown) === 'ambiguous') return done(0, entered); // duplicate cookies in flight: stop checking
      if (errno !== 0 && !KNOWN_ERRNOS.has(errno)) problems.push(`simple reply errno ${errno}`);
      at += 16;
      if (errno === 0 && req.type === Cmd.READ) {
        if (b.length - at < req.length) { problems.push('truncated simple READ data'); break; }
        at += req.length;
      }
      finish(cookie);
    } else if (magic === STRUCTURED_REPLY_MAGIC) {
      if (b.length - at < 20) { problems.push('truncated chunk header'); break; }
      const flags = b.readUInt16BE(at + 4);
      const type = b.readUInt16BE(at + 6);
      const cookie = b.subarray(at + 8, at + 16).toString('hex');
      const len = b.readUInt32BE(at + 16);
      if (b.length - at - 20 < len) { problems.push('truncated chunk payload'); break; }
      const p = decodeChunkPayload(type, b.subarray(at + 20, at + 20 + len));
      at += 20 + len;
      const req = take(cookie, `chunk type ${type}`);
      if (req === null) break;
      if ((req as unknown) === 'ambiguous') return done(0, entered);
      if (p instanceof ProtocolError) { problems.push(`malformed chunk type ${type} length ${len}`); break; }
      if ((flags & ~ReplyFlag.DONE) !== 0) problems.push(`chunk flags 0x${flags.toString(16)}`);
      if (p.type === ReplyType.OFFSET_DATA || p.type === ReplyType.OFFSET_HOLE) {
        const size = p.type === ReplyType.OFFSET_DATA ? p.data.length : p.size;
        if (req.type !== Cmd.READ) problems.push(`data chunk for command ${req.type}`);
        if (p.offset < req.offset || p.offset + size > req.offset + req.length) problems.push(`chunk [${p.offset}, +${size}) outside the request`);
      } else if (p.type === ReplyType.BLOCK_STATUS) {
        if (req.type !== Cmd.BLOCK_STATUS) problems.push(`BLOCK_STATUS chunk for command ${req.type}`);
      } else if (p.type === ReplyType.ERROR || p.type === ReplyType.ERROR_OFFSET) {
        if (!KNOWN_ERRNOS.has(p.errno)) problems.push(`error chunk errno ${p.errno}`);
      } else problems.push(`chunk type ${p.type}`);
      if (flags & ReplyFlag.DONE) finish(cookie);
    } else {
      problems.push(`bad reply magic 0x${magic.toString(16)} at ${at}`);
      break;
    }
  }
  return done(pendingCount(), entered);
}

function load(name: string): Buffer {
  return readFileSync(join(TRANSCRIPT_DIR, `${name}.bin`));
}

const SCENARIOS = scenarios();

describe('transcripts replayed into a Session', () => {
  it('the committed transcripts match make-transcripts.ts', () => {
    for (const s of SCENARIOS) expect(load(s.name).equals(Buffer.concat(s.frames)), s.name).toBe(true);
  });

  // What each scenario must come to, beyond the invariants.
  const expectations: Record<string, (o: Outcome) => void> = {
    'newstyle-fixed-go-simple': (o) => expect([o.accepted, o.answered, o.protocolError]).toEqual([7, 7, null]),
    'newstyle-fixed-go-structured': (o) => expect([o.accepted, o.answered, o.protocolError]).toEqual([7, 7, null]),
    'newstyle-export-name-nozeroes': (o) => expect([o.enteredTransmission, o.answered]).toEqual([true, 1]),
    'newstyle-export-name-zeroes': (o) => expect([o.enteredTransmission, o.answered]).toEqual([true, 2]),
    'newstyle-unfixed-export-name': (o) => expect([o.enteredTransmission, o.answered]).toEqual([true, 1]),
    'options-all': (o) => {
      expect(o.enteredTransmission).toBe(false);
      expect(o.optionReplies[o.optionReplies.length - 1]).toEqual({ opt: Opt.ABORT, type: 1 });
    },
    'errors-transmission': (o) => expect([o.accepted, o.answered]).toEqual([8, 8]),
    'read-only-writes': (o) => expect([o.accepted, o.answered]).toEqual([4, 4]),
    'bad-request-magic': (o) => expect(o.protocolError).toBe('NBD_ERR_BAD_MAGIC'),
    'bad-option-magic': (o) => {
      expect(o.protocolError).toBe('NBD_ERR_BAD_MAGIC');
      // The LIST before the bad option is answered, unless the destroy drops its corked replies
      // (they arrive in the same chunk): see 'a protocol error does not drop replies already queued'.
      expect([[], [2, 2, 1]]).toContainEqual(o.optionReplies.map((r) => r.type));
    },
    // Two exports listed: MAX_OPTIONS + OPTIONS_PER_LISTED_EXPORT x 2 answered, then closed.
    'too-many-options': (o) => expect(o.optionReplies.filter((r) => r.type === 1).length).toBe(MAX_OPTIONS + OPTIONS_PER_LISTED_EXPORT * 2),
    'truncated-mid-write': (o) => expect([o.enteredTransmission, o.accepted, o.protocolError]).toEqual([true, 0, null]),
    'pipelined-no-disc': (o) => expect([o.accepted, o.answered]).toEqual([20, 20]),
  };

  it.each(SCENARIOS.map((s) => [s.name]))('%s', async (name) => {
    const o = await runCase([load(name)]);
    expect(o.problems).toEqual([]);
    expectations[name]!(o);
  });

  it('every scenario fed one byte at a time gives the same outcome', async () => {
    for (const s of SCENARIOS) {
      const whole = Buffer.concat(s.frames);
      const bytes = Array.from({ length: Math.min(whole.length, 8192) }, (_, i) => whole.subarray(i, i + 1));
      if (whole.length > 8192) bytes.push(whole.subarray(8192));
      const o = await runCase(bytes);
      expect(o.problems, s.name).toEqual([]);
      expectations[s.name]!(o);
    }
  });
});

/** One mutated client stream built from the scenarios. */
function mutate(rng: Prng, all: Scenario[]): { input: Buffer; how: string } {
  const s = rng.pick(all);
  const frames = [...s.frames];
  const whole = (): Buffer => Buffer.concat(frames);
  const kind = rng.int(0, 7);
  switch (kind) {
    case 0: { // valid prefix + random tail
      const w = whole();
      const cut = rng.int(0, w.length);
      return { input: Buffer.concat([w.subarray(0, cut), rng.bytes(rng.int(0, 80))]), how: `${s.name}: prefix ${cut} + random tail` };
    }
    case 1: { // bit flips
      const w = Buffer.from(whole());
      const n = rng.int(1, 4);
      for (let i = 0; i < n; i++) { const p = rng.int(0, w.length - 1); w.writeUInt8(w.readUInt8(p) ^ (1 << rng.int(0, 7)), p); }
      return { input: w, how: `${s.name}: ${n} bit flips` };
    }
    case 2: { // drop, duplicate or swap frames
      const i = rng.int(0, frames.length - 1);
      const j = rng.int(0, frames.length - 1);
      const op = rng.int(0, 2);
      if (op === 0) frames.splice(i, 1);
      else if (op === 1) frames.splice(i, 0, frames[i]!);
      else [frames[i], frames[j]] = [frames[j]!, frames[i]!];
      return { input: whole(), how: `${s.name}: frame op ${op} at ${i},${j}` };
    }
    case 3: { // a random length field in an option or request frame (framing attacks)
      const i = rng.int(1, frames.length - 1);
      const f = Buffer.from(frames[i]!);
      const v = rng.pick([0, 1, 7, 4096, 65536, 65537, 2 ** 25, 2 ** 25 + 1, 2 ** 31, 0xffffffff, rng.u32()]);
      if (f.length >= 28 && f.readUInt32BE(0) === 0x25609513) f.writeUInt32BE(v, 24);
      else if (f.length >= 16) f.writeUInt32BE(v, 12);
      frames[i] = f;
      return { input: whole(), how: `${s.name}: frame ${i} length ${v}` };
    }
    case 4: { // random command type / flags / offset in a request frame
      const i = rng.int(1, frames.length - 1);
      const f = Buffer.from(frames[i]!);
      if (f.length >= 28 && f.readUInt32BE(0) === 0x25609513) {
        if (rng.bool()) f.writeUInt16BE(rng.int(0, 0xffff), rng.pick([4, 6]));
        else { f.writeUInt32BE(rng.int(0, 0x1fffff), 16); f.writeUInt32BE(rng.u32(), 20); }
      } else if (f.length >= 16) f.writeUInt32BE(rng.int(0, 20), 8); // option number
      frames[i] = f;
      return { input: whole(), how: `${s.name}: header fields of frame ${i}` };
    }
    case 5: { // splice two scenarios
      const t = rng.pick(all);
      const a = whole();
      const b2 = Buffer.concat(t.frames);
      return { input: Buffer.concat([a.subarray(0, rng.int(0, a.length)), b2.subarray(rng.int(0, b2.length))]), how: `${s.name} x ${t.name}` };
    }
    case 6: { // truncate anywhere
      const w = whole();
      const cut = rng.int(0, w.length);
      return { input: w.subarray(0, cut), how: `${s.name}: truncated at ${cut}` };
    }
    default: // pure garbage after the client flags
      return { input: Buffer.concat([frames[0]!, rng.bytes(rng.int(0, 200))]), how: `${s.name}: garbage` };
  }
}

describe('session fuzz: mutations and random tails of valid transcripts', () => {
  // The fixed seeds run a fixed number of cases (the same run every time); the fresh one runs
  // until its case or time limit.
  it(`${FIXED_CASES} cases per fixed seed, then up to ${MAX_CASES} cases or ${TIME_LIMIT_MS / 1000} s`, () => withSeeds('session fuzz', async (rng, fresh) => {
    const start = Date.now();
    let cases = 0;
    let closedByProtocolError = 0;
    let answered = 0;
    while (fresh ? cases < MAX_CASES && Date.now() - start < TIME_LIMIT_MS : cases < FIXED_CASES) {
      const { input, how } = mutate(rng, SCENARIOS);
      // Deliver in random chunks.
      const chunks: Buffer[] = [];
      for (let at = 0; at < input.length;) { const n = rng.int(1, 600); chunks.push(input.subarray(at, at + n)); at += n; }
      const o = await runCase(chunks);
      if (o.problems.length > 0 || uncaught.length > 0) {
        throw new Error(`case ${cases} (${how}): ${[...o.problems, ...uncaught.map(String)].join('; ')}\ninput ${input.toString('hex').slice(0, 2000)}`);
      }
      cases++;
      if (o.protocolError) closedByProtocolError++;
      answered += o.answered;
    }
    console.log(`session fuzz (${fresh ? 'fresh' : 'fixed'} seed): ${cases} cases in ${Date.now() - start} ms, ${closedByProtocolError} protocol errors, ${answered} replies`);
    // The mutations reach both outcomes: some streams are served, some are cut off.
    expect(cases).toBeGreaterThan(100);
    expect(answered).toBeGreaterThan(0);
    expect(closedByProtocolError).toBeGreaterThan(0);
  }));
});
