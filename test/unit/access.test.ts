// Access rules (protocol/access.md) and the TLS side of negotiate(): parsing with one-line errors,
// first-match order, names/addresses/CIDRs, export patterns, the per-client view of the exports,
// and the spec's forced and selective TLS answers.
import { describe, expect, it } from 'vitest';
import { orThrow } from '../../src/protocol/errors.ts';
import { Opt, Rep, TxFlag } from '../../src/protocol/constants.ts';
import { decodeOptionReply, decodeRepServer, encodeInfoRequest, encodeMetaContextRequest } from '../../src/protocol/handshake.ts';
import { AccessRules, AccessView, Grant, type ClientIdentity } from '../../src/server/access.ts';
import { initialNegotiationState, negotiate, transmissionFlags, type NegotiationContext, type NegotiationState } from '../../src/server/negotiate.ts';
import { StaticExports } from '../../src/server/static-exports.ts';
import { TlsMode, parsePskFile } from '../../src/server/tls.ts';
import { MemoryDevice } from '../helpers/memory-device.ts';

const rules = (r: unknown[]): AccessRules => AccessRules.parse({ rules: r }, 'test.json');
const who = (address: string, ...names: string[]): ClientIdentity => ({ address, names });

describe('access rules', () => {
  const r = rules([
    { clients: ['alice', 'ops.example'], exports: ['*'], access: 'rw' },
    { clients: ['backup'], exports: ['*@*'], access: 'ro' },
    { clients: ['10.1.0.0/16', '192.168.1.7', 'fd00::/8'], exports: ['web-*'], access: 'ro' },
    { clients: ['*'], exports: ['public'], access: 'ro' },
    { clients: ['alice'], exports: ['public'], access: 'ro' }, // never reached for alice: rule 1 wins
  ]);

  it.each([
    [who('1.2.3.4', 'alice'), 'vm1', Grant.ReadWrite],
    [who('1.2.3.4', 'alice'), 'public', Grant.ReadWrite],
    [who('1.2.3.4', 'x', 'ops.example'), 'vm1@s1', Grant.ReadWrite],
    [who('1.2.3.4', 'backup'), 'vm1@s1', Grant.ReadOnly],
    [who('1.2.3.4', 'backup'), 'vm1', Grant.None],
    [who('10.1.200.3'), 'web-1', Grant.ReadOnly],
    [who('::ffff:10.1.2.3'), 'web-1', Grant.ReadOnly],
    [who('10.2.0.1'), 'web-1', Grant.None],
    [who('10.1.0.1'), 'web-1@snap', Grant.None], // '*' does not cross '@'
    [who('192.168.1.7'), 'web-x', Grant.ReadOnly],
    [who('fd00::5'), 'web-x', Grant.ReadOnly],
    [who('unix'), 'public', Grant.ReadOnly],
    [who('unix'), 'vm1', Grant.None],
    [who('1.2.3.4', 'mallory'), 'vm1', Grant.None],
  ])('%o on %s -> %s', (client, exp, grant) => {
    expect(r.grant(client, exp)).toBe(grant);
  });

  it.each([
    [{}, 'expected {"rules": [...]}'],
    [{ rules: [1] }, 'rule 1: not an object'],
    [{ rules: [{ clients: [], exports: ['*'], access: 'rw' }] }, 'rule 1: "clients" must be'],
    [{ rules: [{ clients: ['a'], exports: 'x', access: 'rw' }] }, 'rule 1: "exports" must be'],
    [{ rules: [{ clients: ['a'], exports: ['x'], access: 'write' }] }, 'rule 1: "access" must be "rw" or "ro"'],
    [{ rules: [{ clients: ['a'], exports: ['x'], access: 'ro', tls: true }] }, "rule 1: unknown field 'tls'"],
    [{ rules: [{ clients: ['10.0.0.0/33'], exports: ['x'], access: 'ro' }] }, "rule 1: client '10.0.0.0/33'"],
    [{ rules: [{ clients: ['10.0.0/8'], exports: ['x'], access: 'ro' }] }, "rule 1: client '10.0.0/8'"],
  ])('rejects %j in one line', (json, msg) => {
    expect(() => AccessRules.parse(json, 'f.json')).toThrow(`f.json: ${msg}`);
  });

  it('a view hides ungranted exports and serves ro grants read-only', () => {
    const dev = new MemoryDevice({ size: 1 << 20 });
    const inner = new StaticExports('a').add('a', dev, 'A').add('b', dev, 'B').add('c', dev, 'C');
    const view = new AccessView(inner, (n) => (n === 'a' ? Grant.ReadWrite : n === 'b' ? Grant.ReadOnly : Grant.None));
    expect(view.list().map((e) => e.name)).toEqual(['a', 'b']);
    expect(view.lookup('c')).toBeUndefined();
    expect(view.acquire('c', () => {})).toBeUndefined();
    expect(view.lookup('')?.device.readOnly).toBe(false); // '' is the default export 'a'
    const lease = view.acquire('b', () => {})!;
    expect(lease.device.readOnly).toBe(true);
    expect(transmissionFlags(lease, true) & TxFlag.READ_ONLY).toBe(TxFlag.READ_ONLY);
    expect(inner.counters('b')!.connections).toBe(1);
    lease.release();
    expect(inner.counters('b')!.connections).toBe(0);
  });
});

describe('PSK files', () => {
  it('reads identity:hexkey lines, skips comments, refuses short keys and bad lines', () => {
    const keys = parsePskFile(`# keys\nalice:${'ab'.repeat(32)}\n\nbob:${'01'.repeat(16)}\n`, 'k.psk');
    expect([...keys.keys()]).toEqual(['alice', 'bob']);
    expect(keys.get('bob')!.length).toBe(16);
    expect(() => parsePskFile(`alice:${'ab'.repeat(8)}`, 'k.psk')).toThrow('k.psk:1: key shorter than 16 bytes');
    expect(() => parsePskFile('alice:xyz', 'k.psk')).toThrow('k.psk:1: not IDENTITY:HEXKEY');
    expect(() => parsePskFile('# nothing\n', 'k.psk')).toThrow('no IDENTITY:HEXKEY line');
  });
});

describe('negotiate with TLS (spec "TLS support")', () => {
  const dev = new MemoryDevice({ size: 1 << 20 });
  const table = new StaticExports('open').add('open', dev, 'o').add('secret', dev, 's');
  const st = (): NegotiationState => ({ ...initialNegotiationState(), fixedNewstyle: true, noZeroes: true });
  const ctx = (mode: TlsMode, active: boolean): NegotiationContext => ({
    exports: table, shuttingDown: false, tls: { mode, active, exportNeedsTls: (n) => n === 'secret' },
  });
  const types = (replies: Buffer[]): number[] => replies.map((b) => orThrow(decodeOptionReply(b)).reply.type >>> 0);
  const listed = (replies: Buffer[]): string[] => replies.slice(0, -1).map((b) => decodeRepServer(orThrow(decodeOptionReply(b)).reply.data).name);

  it('require, before STARTTLS: ERR_TLS_REQD for everything but STARTTLS/ABORT; EXPORT_NAME closes', () => {
    const s = st();
    for (const [opt, data] of [[Opt.LIST, Buffer.alloc(0)], [Opt.INFO, encodeInfoRequest('open', [])], [Opt.GO, encodeInfoRequest('open', [])],
      [Opt.STRUCTURED_REPLY, Buffer.alloc(0)], [Opt.LIST_META_CONTEXT, encodeMetaContextRequest('open', [])], [0x7eaf, Buffer.alloc(3)]] as const) {
      expect(types(negotiate(s, ctx(TlsMode.Require, false), opt, data).replies)).toEqual([Rep.ERR_TLS_REQD]);
    }
    expect(s.structuredReplies).toBe(false);
    expect(negotiate(s, ctx(TlsMode.Require, false), Opt.EXPORT_NAME, Buffer.from('open')).next).toBe('close');
    expect(negotiate(st(), ctx(TlsMode.Require, false), Opt.ABORT, Buffer.alloc(0)).next).toBe('close');
    const r = negotiate(st(), ctx(TlsMode.Require, false), Opt.STARTTLS, Buffer.alloc(0));
    expect([r.next, types(r.replies)]).toEqual(['starttls', [Rep.ACK]]);
  });

  it('STARTTLS: off -> ERR_UNSUP; with data -> ERR_INVALID; a second time -> ERR_INVALID; clear-text state is dropped', () => {
    expect(types(negotiate(st(), ctx(TlsMode.Off, false), Opt.STARTTLS, Buffer.alloc(0)).replies)).toEqual([Rep.ERR_UNSUP]);
    expect(types(negotiate(st(), ctx(TlsMode.On, false), Opt.STARTTLS, Buffer.alloc(1)).replies)).toEqual([Rep.ERR_INVALID]);
    expect(types(negotiate(st(), ctx(TlsMode.On, true), Opt.STARTTLS, Buffer.alloc(0)).replies)).toEqual([Rep.ERR_INVALID]);
    const s = st();
    negotiate(s, ctx(TlsMode.On, false), Opt.STRUCTURED_REPLY, Buffer.alloc(0));
    expect(s.structuredReplies).toBe(true);
    expect(negotiate(s, ctx(TlsMode.On, false), Opt.STARTTLS, Buffer.alloc(0)).next).toBe('starttls');
    expect(s.structuredReplies).toBe(false);
  });

  it('selective: a TLS-only export is not listed in clear, answers ERR_TLS_REQD, and works after TLS', () => {
    const plain = ctx(TlsMode.On, false);
    expect(listed(negotiate(st(), plain, Opt.LIST, Buffer.alloc(0)).replies)).toEqual(['open']);
    expect(types(negotiate(st(), plain, Opt.GO, encodeInfoRequest('secret', [])).replies)).toEqual([Rep.ERR_TLS_REQD]);
    const sr = { ...st(), structuredReplies: true };
    expect(types(negotiate(sr, plain, Opt.SET_META_CONTEXT, encodeMetaContextRequest('secret', ['base:allocation'])).replies)).toEqual([Rep.ERR_TLS_REQD]);
    expect(negotiate(st(), plain, Opt.EXPORT_NAME, Buffer.from('secret')).next).toBe('close');
    expect(negotiate(st(), plain, Opt.GO, encodeInfoRequest('open', [])).next).toBe('transmission');
    const secure = ctx(TlsMode.On, true);
    expect(listed(negotiate(st(), secure, Opt.LIST, Buffer.alloc(0)).replies)).toEqual(['open', 'secret']);
    expect(negotiate(st(), secure, Opt.GO, encodeInfoRequest('secret', [])).next).toBe('transmission');
  });
});
