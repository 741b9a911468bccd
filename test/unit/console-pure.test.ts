// The console's pure pieces: the request guard (Host, Origin, token), the token file, the
// Server-Sent Events parser the browser uses (any split of the stream), and the strip's columns.
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SseParser, type SseEvent } from '../../src/http/console/browser/sse.ts';
import { changedColumns } from '../../src/http/console/browser/strip.ts';
import { formatSize as browserFormatSize, stateText } from '../../src/http/console/browser/text.ts';
import { formatSize } from '../../src/util/size.ts';
import { checkHost, checkSameOrigin, checkToken, isLoopbackHost } from '../../src/http/console/guard.ts';
import { loadOrCreateToken, loginUrl, readToken, TOKEN_PATTERN } from '../../src/http/console/token.ts';
import { Prng } from '../helpers/prng.ts';

const dirs: string[] = [];
const fresh = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'snapnbd-console-unit-'));
  dirs.push(d);
  return d;
};
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

describe('guard', () => {
  it('a loopback listener answers only to loopback Host names', () => {
    const host = (h: string | undefined, loopbackOnly = true) => checkHost({ host: h, origin: undefined, secFetchSite: undefined }, loopbackOnly)?.code ?? 'ok';
    expect(host('127.0.0.1:8080')).toBe('ok');
    expect(host('LOCALHOST:8080')).toBe('ok');
    expect(host('[::1]:8080')).toBe('ok');
    expect(host('127.0.0.1:9000')).toBe('ok'); // ssh -L 9000:127.0.0.1:8080
    expect(host('localhost')).toBe('ok');
    expect(host('evil.example:8080')).toBe('BAD_HOST');
    expect(host('127.0.0.1.evil.example:8080')).toBe('BAD_HOST');
    expect(host('127.0.0.1:8080@evil')).toBe('BAD_HOST');
    expect(host(undefined)).toBe('BAD_HOST');
    expect(host('evil.example:8080', false)).toBe('ok'); // --http-insecure on a wider address
    expect(isLoopbackHost('127.1.2.3')).toBe(true);
    expect(isLoopbackHost('[::1]')).toBe(true);
    expect(isLoopbackHost('10.0.0.1')).toBe(false);
    expect(isLoopbackHost('127.0.0.1.evil.example')).toBe(false);
  });

  it('refuses other origins and cross-site fetches', () => {
    const o = (origin: string | undefined, site: string | undefined) =>
      checkSameOrigin({ host: '127.0.0.1:8080', origin, secFetchSite: site })?.code ?? 'ok';
    expect(o(undefined, undefined)).toBe('ok'); // curl, the CLI
    expect(o('http://127.0.0.1:8080', 'same-origin')).toBe('ok');
    expect(o('http://127.0.0.1:8081', undefined)).toBe('CROSS_ORIGIN');
    expect(o('https://127.0.0.1:8080', undefined)).toBe('CROSS_ORIGIN');
    expect(o('null', undefined)).toBe('CROSS_ORIGIN');
    expect(o(undefined, 'cross-site')).toBe('CROSS_ORIGIN');
    expect(o(undefined, 'same-site')).toBe('CROSS_ORIGIN');
  });

  it('wants exactly the token as a Bearer credential', () => {
    const t = 'A'.repeat(43);
    expect(checkToken(`Bearer ${t}`, t)).toBeNull();
    expect(checkToken(undefined, t)?.code).toBe('NO_TOKEN');
    expect(checkToken(`Basic ${t}`, t)?.code).toBe('NO_TOKEN');
    expect(checkToken(`Bearer ${t}B`, t)?.code).toBe('BAD_TOKEN');
    expect(checkToken(`Bearer ${t.slice(1)}`, t)?.code).toBe('BAD_TOKEN');
    expect(checkToken('Bearer ', t)?.code).toBe('NO_TOKEN');
  });
});

describe('token file', () => {
  it('is created once, 0600, and read back the same', () => {
    const d = fresh();
    const a = loadOrCreateToken(d);
    expect(a.created).toBe(true);
    expect(a.token).toMatch(TOKEN_PATTERN);
    expect(statSync(join(d, 'console.token')).mode & 0o777).toBe(0o600);
    expect(loadOrCreateToken(d)).toEqual({ token: a.token, created: false });
    expect(readToken(d)).toBe(a.token);
    expect(loginUrl('127.0.0.1:8080', a.token)).toBe(`http://127.0.0.1:8080/#token=${a.token}`);
    expect(loginUrl('0.0.0.0:8080', 'x')).toBe('http://127.0.0.1:8080/#token=x');
  });

  it('refuses a file others may read, a symlink, or one that holds no token, and changes none of them', () => {
    let d = fresh();
    loadOrCreateToken(d);
    chmodSync(join(d, 'console.token'), 0o640);
    expect(() => loadOrCreateToken(d)).toThrow(/may be read by others \(mode 640\)/);
    d = fresh();
    writeFileSync(join(d, 'elsewhere'), `${'B'.repeat(43)}\n`, { mode: 0o600 });
    symlinkSync(join(d, 'elsewhere'), join(d, 'console.token'));
    expect(() => loadOrCreateToken(d)).toThrow(/not a regular file/);
    d = fresh();
    writeFileSync(join(d, 'console.token'), 'hello\n', { mode: 0o600 });
    expect(() => loadOrCreateToken(d)).toThrow(/does not hold a console token/);
    expect(readFileSync(join(d, 'console.token'), 'utf8')).toBe('hello\n');
  });
});

describe('SseParser', () => {
  const stream = ': hello\n\nevent: state\ndata: {"a":1}\n\n: keep-alive\n\nevent: state\ndata: line1\ndata: line2\r\n\r\ndata: plain\n\n';
  const want: SseEvent[] = [
    { event: 'state', data: '{"a":1}' },
    { event: 'state', data: 'line1\nline2' },
    { event: 'message', data: 'plain' },
  ];

  it('gives the same events for any split of the stream', () => {
    const rng = new Prng(17);
    for (let round = 0; round < 200; round++) {
      const p = new SseParser();
      const got: SseEvent[] = [];
      let at = 0;
      while (at < stream.length) {
        const n = rng.int(1, 8);
        got.push(...p.push(stream.slice(at, at + n)));
        at += n;
      }
      expect(got).toEqual(want);
    }
  });
});

describe('changes strip columns', () => {
  it('maps extents to runs of columns, merging neighbours, at least one column each', () => {
    const MiB = 1024 * 1024;
    expect(changedColumns([], 16 * MiB, 1000)).toEqual([]);
    expect(changedColumns([{ offset: 8 * MiB, length: 65536 }], 16 * MiB, 1000)).toEqual([[500, 503]]);
    expect(changedColumns([{ offset: 0, length: 1 }, { offset: 2, length: 1 }], 16 * MiB, 1000)).toEqual([[0, 0]]);
    expect(changedColumns([{ offset: 0, length: 16 * MiB }], 16 * MiB, 1000)).toEqual([[0, 999]]);
    expect(changedColumns([{ offset: 16 * MiB - 1, length: 1 }], 16 * MiB, 1000)).toEqual([[999, 999]]);
    expect(changedColumns([{ offset: 0, length: 4096 }, { offset: 15 * MiB, length: 4096 }], 16 * MiB, 10)).toEqual([[0, 0], [9, 9]]);
  });
});

describe('texts', () => {
  it('shows any state as text, with progress and a failure reason, including states it does not know', () => {
    expect(stateText('ready')).toBe('ready');
    expect(stateText('backing-up', 0.42)).toBe('backing-up 42%');
    expect(stateText('restoring', 37)).toBe('restoring 37%');
    expect(stateText('backing-up 42%', 0.5)).toBe('backing-up 42%');
    expect(stateText({ state: 'failed', reason: 'bucket gone' })).toBe('failed: bucket gone');
    expect(stateText({ state: 'backing-up', progress: 0.999 })).toBe('backing-up 99%');
    expect(stateText('frobnicating')).toBe('frobnicating');
    expect(stateText({ phase: 2 })).toBe('{"phase":2}');
    expect(stateText(undefined)).toBe('—');
  });

  it('formats sizes exactly as the CLI does', () => {
    const rng = new Prng(5);
    for (let i = 0; i < 2000; i++) {
      const n = i < 100 ? 2 ** (i % 53) : rng.int(0, 2 ** 31) * 2 ** rng.int(0, 20);
      expect(browserFormatSize(n)).toBe(formatSize(n));
    }
  });
});
