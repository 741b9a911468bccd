// Negotiation tables: negotiate() is pure, so each option x state gives exact replies and a next
// step (spec "Fixed newstyle negotiation", "Option types", "Metadata querying").
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/protocol/errors.ts';
import {
  BASE_ALLOCATION_ID, Info, MAX_HANDSHAKE_OPTION_BYTES, MAX_HANDSHAKE_REPLY_BYTES, MAX_OPTIONS, MAX_OPTION_LEN,
  MAX_PAYLOAD, OPTIONS_PER_LISTED_EXPORT, Opt, Rep, TxFlag,
} from '../../src/protocol/constants.ts';
import {
  decodeExportNameReply, decodeInfo, decodeOptionReply, decodeRepMetaContext, decodeRepServer, encodeInfoRequest,
  encodeMetaContextRequest, encodeOptionReply, type OptionReply,
} from '../../src/protocol/handshake.ts';
import {
  applyClientFlags, initialNegotiationState, negotiate, transmissionFlags, utf8Prefix, type NegotiationResult, type NegotiationState,
} from '../../src/server/negotiate.ts';
import type { ExportResolver } from '../../src/server/exports.ts';
import { StaticExports } from '../../src/server/static-exports.ts';
import { MemoryDevice } from '../helpers/memory-device.ts';

const RW = new MemoryDevice({ size: 1 << 20 });
const RO = new MemoryDevice({ size: 2 << 20, readOnly: true, multiConn: false, preferredBlockSize: 65536 });
const exportsTable = (): StaticExports => new StaticExports('disk').add('disk', RW, 'rw disk').add('snap', RO, 'ro snap');

function state(o: Partial<NegotiationState> = {}): NegotiationState {
  return { ...initialNegotiationState(), fixedNewstyle: true, noZeroes: true, ...o };
}

function run(st: NegotiationState, opt: number, data: Buffer = Buffer.alloc(0), shuttingDown = false): NegotiationResult {
  return negotiate(st, { exports: exportsTable(), shuttingDown }, opt, data);
}

function decoded(r: NegotiationResult): OptionReply[] {
  return r.replies.map((b) => {
    const d = decodeOptionReply(b);
    if (d instanceof ProtocolError || d.next !== b.length) throw new Error(`malformed option reply ${b.toString('hex')}`);
    return d.reply;
  });
}
const types = (r: NegotiationResult): number[] => decoded(r).map((x) => x.type >>> 0);

const RW_FLAGS_SR = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.SEND_FUA | TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES
  | TxFlag.SEND_DF | TxFlag.CAN_MULTI_CONN | TxFlag.SEND_CACHE | TxFlag.SEND_FAST_ZERO;

describe('client flags', () => {
  it.each([
    [0, true, false, false],
    [1, true, true, false],
    [2, true, false, true],
    [3, true, true, true],
    [4, false, false, false],
    [0x80000001, false, false, false],
  ])('flags 0x%s -> ok %s, fixed %s, noZeroes %s', (flags, ok, fixed, nz) => {
    const st = initialNegotiationState();
    expect(applyClientFlags(st, flags).ok).toBe(ok);
    if (ok) expect([st.fixedNewstyle, st.noZeroes]).toEqual([fixed, nz]);
  });
});

describe('transmission flags are truthful', () => {
  const exp = exportsTable();
  it.each([
    ['disk', true, RW_FLAGS_SR],
    ['disk', false, RW_FLAGS_SR & ~TxFlag.SEND_DF],
    ['snap', true, TxFlag.HAS_FLAGS | TxFlag.READ_ONLY | TxFlag.SEND_FLUSH | TxFlag.SEND_CACHE | TxFlag.SEND_DF],
    ['snap', false, TxFlag.HAS_FLAGS | TxFlag.READ_ONLY | TxFlag.SEND_FLUSH | TxFlag.SEND_CACHE],
  ])('%s, structured %s -> 0x%s', (name, sr, flags) => {
    expect(transmissionFlags(exp.lookup(name)!, sr)).toBe(flags);
  });
  it('golden values', () => {
    expect(RW_FLAGS_SR).toBe(0x0ded);
    expect(transmissionFlags(exp.lookup('snap')!, false)).toBe(0x0407);
  });
});

describe('options without fixed newstyle', () => {
  it.each([Opt.GO, Opt.LIST, Opt.ABORT, Opt.STRUCTURED_REPLY, 99])('option %s closes without a reply', (opt) => {
    const r = run(state({ fixedNewstyle: false }), opt);
    expect(r.next).toBe('close');
    expect(r.replies).toEqual([]);
  });
  it('EXPORT_NAME works, with the 124 zeroes when NO_ZEROES was not agreed', () => {
    const r = run(state({ fixedNewstyle: false, noZeroes: false }), Opt.EXPORT_NAME, Buffer.from('disk'));
    expect(r).toMatchObject({ next: 'transmission', exportName: 'disk', baseAllocation: false });
    expect(r.replies.length).toBe(1);
    expect(r.replies[0]!.length).toBe(134);
    expect(decodeExportNameReply(r.replies[0]!)).toEqual({ size: 1 << 20, flags: RW_FLAGS_SR & ~TxFlag.SEND_DF });
    expect(r.replies[0]!.subarray(10).equals(Buffer.alloc(124))).toBe(true);
  });
});

describe('simple options', () => {
  it('unknown option -> ERR_UNSUP after its data, negotiation continues', () => {
    for (const opt of [0, 4 /* PEEK_EXPORT */, Opt.EXTENDED_HEADERS, 12, 0xffffffff]) {
      const r = run(state(), opt, Buffer.from('junk'));
      expect(r.next).toBe('options');
      expect(decoded(r).map((x) => [x.opt, x.type])).toEqual([[opt, Rep.ERR_UNSUP]]);
    }
  });
  it('ABORT -> ACK then close (also while shutting down)', () => {
    for (const sd of [false, true]) {
      const r = run(state(), Opt.ABORT, Buffer.alloc(0), sd);
      expect(r.next).toBe('close');
      expect(r.replies).toEqual([encodeOptionReply(Opt.ABORT, Rep.ACK)]);
    }
  });
  it('LIST -> one SERVER per export then ACK; with data -> ERR_INVALID', () => {
    const r = run(state(), Opt.LIST);
    expect(r.next).toBe('options');
    const reps = decoded(r);
    expect(reps.map((x) => x.type)).toEqual([Rep.SERVER, Rep.SERVER, Rep.ACK]);
    expect(reps.slice(0, 2).map((x) => decodeRepServer(x.data))).toEqual([
      { name: 'disk', description: 'rw disk' }, { name: 'snap', description: 'ro snap' }]);
    const bad = run(state(), Opt.LIST, Buffer.from([0]));
    expect(bad.next).toBe('options');
    expect(types(bad)).toEqual([Rep.ERR_INVALID]);
  });
  it('STARTTLS is refused with ERR_UNSUP (no TLS configured); with data ERR_INVALID', () => {
    expect(types(run(state(), Opt.STARTTLS))).toEqual([Rep.ERR_UNSUP]);
    expect(types(run(state(), Opt.STARTTLS, Buffer.from([1])))).toEqual([Rep.ERR_INVALID]);
  });
  it('STRUCTURED_REPLY -> ACK once; again or with data -> ERR_INVALID', () => {
    const st = state();
    expect(types(run(st, Opt.STRUCTURED_REPLY))).toEqual([Rep.ACK]);
    expect(st.structuredReplies).toBe(true);
    expect(types(run(st, Opt.STRUCTURED_REPLY))).toEqual([Rep.ERR_INVALID]);
    const st2 = state();
    expect(types(run(st2, Opt.STRUCTURED_REPLY, Buffer.from([0])))).toEqual([Rep.ERR_INVALID]);
    expect(st2.structuredReplies).toBe(false);
  });
});

describe('INFO and GO', () => {
  it.each([
    [Opt.INFO, false, 'disk', 'options'],
    [Opt.INFO, true, 'snap', 'options'],
    [Opt.GO, false, 'disk', 'transmission'],
    [Opt.GO, true, 'snap', 'transmission'],
    [Opt.GO, false, '', 'transmission'],
  ])('opt %s structured %s export "%s": EXPORT, NAME, DESCRIPTION, BLOCK_SIZE, ACK even with zero info requests', (opt, sr, name, next) => {
    const st = state({ structuredReplies: sr });
    const r = run(st, opt, encodeInfoRequest(name, []));
    expect(r.next).toBe(next);
    const reps = decoded(r);
    expect(reps.map((x) => [x.opt, x.type])).toEqual([[opt, Rep.INFO], [opt, Rep.INFO], [opt, Rep.INFO], [opt, Rep.INFO], [opt, Rep.ACK]]);
    const real = name === '' ? 'disk' : name;
    const dev = real === 'disk' ? RW : RO;
    expect(reps.slice(0, 4).map((x) => decodeInfo(x.data))).toEqual([
      { type: Info.EXPORT, size: dev.size, flags: transmissionFlags(exportsTable().lookup(real)!, sr) },
      { type: Info.NAME, name: real },
      { type: Info.DESCRIPTION, description: real === 'disk' ? 'rw disk' : 'ro snap' },
      { type: Info.BLOCK_SIZE, minimum: 1, preferred: dev.preferredBlockSize, maximum: MAX_PAYLOAD },
    ]);
    if (r.next === 'transmission') expect(r.exportName).toBe(real);
  });
  it('GO with info requests answers the same set (requests are hints)', () => {
    const a = run(state(), Opt.GO, encodeInfoRequest('disk', [Info.BLOCK_SIZE, Info.NAME, 77]));
    const b = run(state(), Opt.GO, encodeInfoRequest('disk', []));
    expect(a.replies).toEqual(b.replies);
  });
  it('unknown export -> ERR_UNKNOWN and negotiation continues', () => {
    for (const opt of [Opt.INFO, Opt.GO]) {
      const r = run(state(), opt, encodeInfoRequest('nope', []));
      expect(r.next).toBe('options');
      expect(decoded(r).map((x) => [x.opt, x.type])).toEqual([[opt, Rep.ERR_UNKNOWN]]);
    }
  });
  it('an export that exists but cannot be served -> ERR_UNKNOWN whose text says why (cut to 4096 bytes)', () => {
    const why = (n: string): string | undefined => (n === 'broken' ? "export 'broken' is unavailable: backing file /b changed" : n === 'long' ? `a${'é'.repeat(3000)}` : undefined);
    const table = exportsTable();
    const resolver: ExportResolver = { list: () => table.list(), lookup: (n) => table.lookup(n), acquire: (n, r) => table.acquire(n, r), unavailable: why };
    for (const opt of [Opt.INFO, Opt.GO]) {
      const r = negotiate(state(), { exports: resolver, shuttingDown: false }, opt, encodeInfoRequest('broken', []));
      expect(decoded(r).map((x) => [x.type >>> 0, x.data.toString('utf8')])).toEqual([[Rep.ERR_UNKNOWN, "export 'broken' is unavailable: backing file /b changed"]]);
      const unknown = negotiate(state(), { exports: resolver, shuttingDown: false }, opt, encodeInfoRequest('nope', []));
      expect(decoded(unknown)[0]!.data.toString('utf8')).toBe("unknown export 'nope'");
      const long = decoded(negotiate(state(), { exports: resolver, shuttingDown: false }, opt, encodeInfoRequest('long', [])))[0]!.data;
      expect(long.length).toBe(4095); // byte 4096 would be half of a two-byte character
      expect(long.toString('utf8')).toBe(`a${'é'.repeat(2047)}`);
    }
    const closed = negotiate(state(), { exports: resolver, shuttingDown: false }, Opt.EXPORT_NAME, Buffer.from('broken'));
    expect(closed).toMatchObject({ next: 'close', replies: [], reason: "export 'broken' is unavailable: backing file /b changed" });
    expect(utf8Prefix('aé', 2).toString('utf8')).toBe('a');
    expect(utf8Prefix('abc', 3).toString('utf8')).toBe('abc');
  });
  it('malformed request -> ERR_INVALID', () => {
    for (const data of [Buffer.alloc(0), Buffer.from('00000004646973', 'hex'), Buffer.concat([encodeInfoRequest('disk', []), Buffer.from([0])])]) {
      expect(types(run(state(), Opt.GO, data))).toEqual([Rep.ERR_INVALID]);
    }
  });
  it('EXPORT_NAME of an unknown export closes with no reply (there is no error reply for it)', () => {
    const r = run(state(), Opt.EXPORT_NAME, Buffer.from('nope'));
    expect(r.next).toBe('close');
    expect(r.replies).toEqual([]);
  });
});

describe('shutting down', () => {
  it.each([Opt.LIST, Opt.GO, Opt.INFO, Opt.STRUCTURED_REPLY, Opt.SET_META_CONTEXT, 99])('option %s -> ERR_SHUTDOWN', (opt) => {
    const r = run(state(), opt, opt === Opt.GO || opt === Opt.INFO ? encodeInfoRequest('disk', []) : Buffer.alloc(0), true);
    expect(r.next).toBe('options');
    expect(types(r)).toEqual([Rep.ERR_SHUTDOWN]);
  });
  it('EXPORT_NAME closes', () => {
    expect(run(state(), Opt.EXPORT_NAME, Buffer.from('disk'), true)).toMatchObject({ next: 'close', replies: [] });
  });
});

describe('meta contexts', () => {
  const meta = (st: NegotiationState, opt: number, name: string, queries: string[]): NegotiationResult =>
    run(st, opt, encodeMetaContextRequest(name, queries));
  const contexts = (r: NegotiationResult): { id: number; name: string }[] =>
    decoded(r).filter((x) => x.type === Rep.META_CONTEXT).map((x) => decodeRepMetaContext(x.data));

  it.each([
    // opt, queries, expected contexts (id) ; LIST ids are 0, SET gives the real id
    [Opt.LIST_META_CONTEXT, ['base:allocation'], [{ id: 0, name: 'base:allocation' }]],
    [Opt.LIST_META_CONTEXT, ['base:'], [{ id: 0, name: 'base:allocation' }]],
    [Opt.LIST_META_CONTEXT, [], [{ id: 0, name: 'base:allocation' }]], // zero queries: list all
    [Opt.LIST_META_CONTEXT, ['qemu:dirty-bitmap:x', 'nope:'], []], //     unknown namespaces ignored
    [Opt.SET_META_CONTEXT, ['base:allocation'], [{ id: BASE_ALLOCATION_ID, name: 'base:allocation' }]],
    [Opt.SET_META_CONTEXT, ['x:y', 'base:allocation', 'base:other'], [{ id: BASE_ALLOCATION_ID, name: 'base:allocation' }]],
    [Opt.SET_META_CONTEXT, [], []], //                                   zero queries: select none
    [Opt.SET_META_CONTEXT, ['qemu:allocation-depth'], []],
  ] as const)('opt %s queries %j -> %j then ACK', (opt, queries, expected) => {
    const st = state({ structuredReplies: true });
    const r = meta(st, opt, 'disk', [...queries]);
    expect(r.next).toBe('options');
    expect(contexts(r)).toEqual(expected);
    expect(types(r)).toEqual([...expected.map(() => Rep.META_CONTEXT), Rep.ACK]);
    if (opt === Opt.SET_META_CONTEXT) expect(st.metaContext).toEqual({ exportName: 'disk', baseAllocation: expected.length === 1 });
    else expect(st.metaContext).toBeNull();
  });

  it('before STRUCTURED_REPLY -> ERR_INVALID (both LIST and SET)', () => {
    for (const opt of [Opt.LIST_META_CONTEXT, Opt.SET_META_CONTEXT]) {
      const st = state();
      expect(types(meta(st, opt, 'disk', ['base:allocation']))).toEqual([Rep.ERR_INVALID]);
      expect(st.metaContext).toBeNull();
    }
  });
  it('unknown export -> ERR_UNKNOWN; malformed -> ERR_INVALID; a failed SET clears the earlier selection', () => {
    const st = state({ structuredReplies: true });
    meta(st, Opt.SET_META_CONTEXT, 'disk', ['base:allocation']);
    expect(st.metaContext?.baseAllocation).toBe(true);
    expect(types(meta(st, Opt.SET_META_CONTEXT, 'nope', ['base:allocation']))).toEqual([Rep.ERR_UNKNOWN]);
    expect(st.metaContext).toBeNull();
    expect(types(run(st, Opt.SET_META_CONTEXT, Buffer.from('0000', 'hex')))).toEqual([Rep.ERR_INVALID]);
  });
  it('GO carries base:allocation only for the export the SET named', () => {
    const st = state({ structuredReplies: true });
    meta(st, Opt.SET_META_CONTEXT, 'disk', ['base:allocation']);
    expect(run(st, Opt.GO, encodeInfoRequest('disk', []))).toMatchObject({ next: 'transmission', baseAllocation: true });
    expect(run(st, Opt.GO, encodeInfoRequest('snap', []))).toMatchObject({ next: 'transmission', baseAllocation: false });
    const none = state({ structuredReplies: true });
    expect(run(none, Opt.GO, encodeInfoRequest('disk', []))).toMatchObject({ baseAllocation: false });
  });
});

describe('handshake budgets', () => {
  /** `count` exports with names of `nameLen` bytes and descriptions of `descLen`. */
  const many = (count: number, nameLen = 8, descLen = 0): StaticExports => {
    const t = new StaticExports('e0');
    for (let i = 0; i < count; i++) t.add(`e${i}`.padEnd(nameLen, 'x'), RW, 'd'.repeat(descLen));
    return t;
  };
  const runOn = (exp: StaticExports, st: NegotiationState, opt: number, data: Buffer = Buffer.alloc(0)): NegotiationResult =>
    negotiate(st, { exports: exp, shuttingDown: false }, opt, data);

  it(`before any LIST, ${MAX_OPTIONS} options are answered and the next one closes without a reply`, () => {
    const st = state();
    for (let i = 0; i < MAX_OPTIONS; i++) expect(run(st, Opt.STRUCTURED_REPLY).next).toBe('options');
    const r = run(st, Opt.STRUCTURED_REPLY);
    expect(r).toMatchObject({ next: 'close', replies: [] });
  });

  it(`a LIST allows ${OPTIONS_PER_LISTED_EXPORT} more options per export it named: nbdinfo --list of 3,300 exports fits`, () => {
    const exp = many(3300);
    const st = state({ structuredReplies: true });
    expect(types(runOn(exp, st, Opt.LIST))).toHaveLength(3301);
    // What nbdinfo --list sends per export: INFO, then LIST_META_CONTEXT.
    for (let i = 0; i < 3300; i++) {
      const name = `e${i}`.padEnd(8, 'x');
      expect(types(runOn(exp, st, Opt.INFO, encodeInfoRequest(name, [])))).toEqual([Rep.INFO, Rep.INFO, Rep.INFO, Rep.INFO, Rep.ACK]);
      expect(types(runOn(exp, st, Opt.LIST_META_CONTEXT, encodeMetaContextRequest(name, [])))).toEqual([Rep.META_CONTEXT, Rep.ACK]);
    }
    expect(runOn(exp, st, Opt.ABORT).next).toBe('close');
  });

  it('a client looping options forever is cut off at the allowance, however many exports it listed', () => {
    const exp = many(3300);
    const st = state();
    let answered = 0;
    for (;;) {
      const r = runOn(exp, st, Opt.INFO, encodeInfoRequest('e0xxxxxx', []));
      if (r.next === 'close') break;
      answered++;
      if (answered === 1) runOn(exp, st, Opt.LIST); // the LIST itself is the first option
    }
    expect(answered + 1).toBe(MAX_OPTIONS + OPTIONS_PER_LISTED_EXPORT * 3300);
    // Repeating LIST does not raise the allowance further.
    expect(st.listedExports).toBe(3300);
  });

  it(`repeated LISTs of many exports are cut off by the ${MAX_HANDSHAKE_REPLY_BYTES / 2 ** 20} MiB reply budget, before sending more`, () => {
    const exp = many(3300, 100, 200); // ~0.4 KiB per entry: ~1 MiB per LIST
    const st = state();
    let lists = 0;
    for (;;) {
      const r = runOn(exp, st, Opt.LIST);
      if (r.next === 'close') {
        expect(r.replies).toEqual([]);
        break;
      }
      lists++;
    }
    expect(lists).toBeGreaterThan(10);
    expect(lists).toBeLessThan(MAX_OPTIONS + OPTIONS_PER_LISTED_EXPORT * 3300);
    expect(st.replyBytes).toBeGreaterThan(MAX_HANDSHAKE_REPLY_BYTES);
  });

  it(`more than ${MAX_HANDSHAKE_OPTION_BYTES / 2 ** 20} MiB of option data closes`, () => {
    const exp = many(3300);
    const st = state();
    runOn(exp, st, Opt.LIST);
    const big = Buffer.alloc(MAX_OPTION_LEN);
    let answered = 0;
    while (runOn(exp, st, 0x7eaf, big).next === 'options') answered++;
    expect(answered).toBe(Math.floor(MAX_HANDSHAKE_OPTION_BYTES / (MAX_OPTION_LEN + 16)));
  });
});
