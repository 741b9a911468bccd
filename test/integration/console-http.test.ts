// The web console's HTTP surface against the real server (bin/snapnbd serve --http): who is let
// in (token, Host, Origin, Sec-Fetch-Site, content type), that /api/rpc answers exactly as the
// control socket does, the event stream, the token file, `snapnbd console url`, and the rule
// that a non-loopback --http needs --http-insecure.
import { chmodSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rawControl } from '../helpers/control-raw.ts';
import { request, rpcRequest, startConsoleServer, type ConsoleServer } from '../helpers/console.ts';
import { runCli, startServer, tempDir } from '../helpers/server.ts';

const cli = (args: string[]) => runCli(args);

let c: ConsoleServer;

beforeAll(async () => {
  c = await startConsoleServer({ args: ['--volume', 'vm1=16M'] });
});
afterAll(async () => {
  await c?.stop();
});

async function snapshotNames(): Promise<string[]> {
  return (await c.ctl.call<{ snapshots: { name: string }[] }>('snapshot.list', { volume: 'vm1' })).snapshots.map((s) => s.name);
}

describe('who may use the console API', () => {
  it('serves the static shell with a strict CSP and no inline script', async () => {
    const r = await request(c.port, { path: '/' });
    expect(r.status).toBe(200);
    const csp = r.headers['content-security-policy'] ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).toContain("frame-ancestors 'none'");
    expect(r.headers['set-cookie']).toBeUndefined();
    // Every <script> has a src; no inline handlers or style attributes.
    expect(r.body).toMatch(/<script type="module" src="app\.js"><\/script>/);
    expect(r.body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(r.body).not.toMatch(/\son[a-z]+=|\sstyle=/i);
    const js = await request(c.port, { path: '/app.js' });
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/^text\/javascript/);
    expect((await request(c.port, { path: '/../../console.token' })).status).toBe(404);
    expect((await request(c.port, { path: '/app.js.map' })).status).toBe(404);
  });

  it('refuses a request without the token, or with a wrong one, and changes nothing', async () => {
    let r = await rpcRequest(c, 'snapshot.create', { volume: 'vm1', name: 'no-token' }, null);
    expect(r.status).toBe(401);
    expect(r.json()).toEqual({ error: { code: 'NO_TOKEN', message: expect.any(String) } });
    expect(r.headers['www-authenticate']).toMatch(/^Bearer/);
    r = await rpcRequest(c, 'snapshot.create', { volume: 'vm1', name: 'bad-token' }, `${c.token.slice(0, -1)}x`);
    expect(r.status).toBe(401);
    expect((r.json() as { error: { code: string } }).error.code).toBe('BAD_TOKEN');
    r = await rpcRequest(c, 'snapshot.create', { volume: 'vm1', name: 'empty' }, '');
    expect(r.status).toBe(401);
    expect(await snapshotNames()).toEqual([]);
    expect((await request(c.port, { path: '/api/events' })).status).toBe(401);
  });

  it('refuses another origin even with the right token', async () => {
    let r = await rpcRequest(c, 'snapshot.create', { volume: 'vm1', name: 'evil' }, c.token, { Origin: 'http://evil.example' });
    expect(r.status).toBe(403);
    expect((r.json() as { error: { code: string } }).error.code).toBe('CROSS_ORIGIN');
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    r = await rpcRequest(c, 'snapshot.create', { volume: 'vm1', name: 'evil' }, c.token, { 'Sec-Fetch-Site': 'cross-site' });
    expect(r.status).toBe(403);
    r = await rpcRequest(c, 'snapshot.create', { volume: 'vm1', name: 'evil' }, c.token, { Origin: `http://127.0.0.1:${c.port + 1}` });
    expect(r.status).toBe(403);
    // A preflight gets no CORS answer.
    r = await request(c.port, { method: 'OPTIONS', path: '/api/rpc', headers: { Origin: 'http://evil.example', 'Access-Control-Request-Method': 'POST' } });
    expect(r.status).toBe(403);
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    // A page re-pointing its own name at 127.0.0.1 (DNS rebinding) sends its own Host.
    r = await rpcRequest(c, 'snapshot.create', { volume: 'vm1', name: 'rebound' }, c.token, { Host: `evil.example:${c.port}` });
    expect(r.status).toBe(403);
    expect((r.json() as { error: { code: string } }).error.code).toBe('BAD_HOST');
    // A form post (text/plain, no preflight) with the right token still does nothing.
    r = await request(c.port, {
      method: 'POST', path: '/api/rpc', headers: { 'Content-Type': 'text/plain', Authorization: `Bearer ${c.token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'snapshot.create', params: { volume: 'vm1', name: 'form' } }),
    });
    expect(r.status).toBe(415);
    expect(await snapshotNames()).toEqual([]);
    // The same origin, and localhost, are fine.
    r = await rpcRequest(c, 'server.info', {}, c.token, { Origin: c.base, 'Sec-Fetch-Site': 'same-origin' });
    expect(r.status).toBe(200);
    r = await rpcRequest(c, 'server.info', {}, c.token, { Host: `localhost:${c.port}` });
    expect(r.status).toBe(200);
  });
});

describe('the API is the control socket', () => {
  it('answers every request exactly as the socket does (results and errors)', async () => {
    const ctl = await rawControl(c.server.controlPath);
    try {
      const lines = [
        '{"jsonrpc":"2.0","id":7,"method":"volume.info","params":{"name":"vm1"}}',
        '{"jsonrpc":"2.0","id":8,"method":"volume.info","params":{"name":"nope"}}',
        '{"jsonrpc":"2.0","id":9,"method":"no.such","params":{}}',
        '{"jsonrpc":"2.0","id":10,"method":"snapshot.create","params":{"volume":"vm1","name":"x","extra":1}}',
        '{"jsonrpc":"2.0","id":11,"method"',
        '[{"jsonrpc":"2.0","id":1,"method":"volume.list"},{"jsonrpc":"2.0","id":2,"method":"server.stats"}]',
      ];
      for (const line of lines) {
        ctl.send(`${line}\n`);
        const viaSocket = await ctl.next();
        const r = await request(c.port, {
          method: 'POST', path: '/api/rpc', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${c.token}` }, body: line,
        });
        expect(r.status).toBe(200);
        // Counters and the event-loop delay window (server.stats) move between the two calls;
        // everything else is identical.
        const steady = (x: unknown): string => JSON.stringify(x).replace(/"requests":\d+/g, '').replace(/"eventLoop":\{[^}]*\}/g, '');
        expect(steady(r.json())).toBe(steady(viaSocket));
      }
      // A notification has no answer.
      const n = await request(c.port, {
        method: 'POST', path: '/api/rpc', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${c.token}` },
        body: '{"jsonrpc":"2.0","method":"server.info"}',
      });
      expect(n.status).toBe(204);
    } finally {
      ctl.close();
    }
  });

  it('refuses oversized bodies and wrong methods, and survives garbage', async () => {
    const big = await request(c.port, {
      method: 'POST', path: '/api/rpc', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${c.token}` },
      body: Buffer.alloc(1024 * 1024 + 1, 0x20),
    });
    expect(big.status).toBe(413);
    expect((await request(c.port, { path: '/api/rpc', headers: { Authorization: `Bearer ${c.token}` } })).status).toBe(405);
    expect((await request(c.port, { path: '/api/nothing', headers: { Authorization: `Bearer ${c.token}` } })).status).toBe(404);
    // Raw garbage instead of HTTP: the connection is dropped, the server goes on.
    await new Promise<void>((resolve) => {
      const s = net.connect(c.port, '127.0.0.1', () => s.end(Buffer.from('\x16\x03\x01\x00\xff garbage\r\n\r\n')));
      s.on('data', () => undefined);
      s.on('close', () => resolve());
      s.on('error', () => undefined);
    });
    expect((await rpcRequest(c, 'server.info', {})).status).toBe(200);
  });

  it('streams the state as Server-Sent Events, and a change made on the socket arrives', async () => {
    const events: string[] = [];
    let wake: (() => void) | null = null;
    const req = http.get({ host: '127.0.0.1', port: c.port, path: '/api/events', headers: { Authorization: `Bearer ${c.token}` } });
    const res = await new Promise<http.IncomingMessage>((resolve) => req.once('response', resolve));
    try {
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
      let buf = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = /^event: state\ndata: (.*)$/m.exec(block);
          if (data) { events.push(data[1]!); wake?.(); }
        }
      });
      const next = async (pred: (s: { volumes: { name: string }[]; snapshots: Record<string, { name: string; state: string }[]> }) => boolean) => {
        const deadline = Date.now() + 20_000;
        for (;;) {
          for (const e of events) {
            const s = JSON.parse(e) as Parameters<typeof pred>[0];
            if (pred(s)) return s;
          }
          if (Date.now() > deadline) throw new Error(`no such state among ${events.length} events`);
          await new Promise<void>((r) => { wake = r; setTimeout(r, 500); });
        }
      };
      const first = await next((s) => s.volumes.some((v) => v.name === 'vm1'));
      expect((first.snapshots.vm1 ?? []).map((x) => x.name)).not.toContain('seen-live');
      await c.ctl.call('snapshot.create', { volume: 'vm1', name: 'seen-live' });
      const later = await next((s) => (s.snapshots.vm1 ?? []).some((x) => x.name === 'seen-live'));
      expect(later.snapshots.vm1!.find((x) => x.name === 'seen-live')!.state).toBe('ready');
    } finally {
      req.destroy();
    }
  });
});

describe('the token file and the login link', () => {
  it('is 0600, kept across restarts, and printed by snapnbd console url', async () => {
    const path = join(c.server.dataDir, 'console.token');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const r = await cli(['console', 'url', '--data-dir', c.server.dataDir]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`http://127.0.0.1:${c.port}/#token=${c.token}\n`);
    // The same link works as the server printed it at start.
    expect((await rpcRequest(c, 'server.info', {}, new URL(r.stdout.trim()).hash.slice('#token='.length))).status).toBe(200);
  });

  it('a restart keeps the token; a token file others may read stops the start, naming it', async () => {
    const dir = tempDir();
    let s = await startServer({ dataDir: dir, args: ['--http', '127.0.0.1:0'] });
    const first = readFileSync(join(dir, 'console.token'), 'utf8');
    await s.stop();
    s = await startServer({ dataDir: dir, args: ['--http', '127.0.0.1:0'] });
    expect(readFileSync(join(dir, 'console.token'), 'utf8')).toBe(first);
    // No console: console url says so.
    await s.stop();
    s = await startServer({ dataDir: dir });
    const r = await cli(['console', 'url', '--data-dir', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no web console.*--http/);
    await s.stop();
    chmodSync(join(dir, 'console.token'), 0o644);
    await expect(startServer({ dataDir: dir, args: ['--http', '127.0.0.1:0'] })).rejects.toThrow(/console\.token may be read by others \(mode 644\)/);
  });

  it('--http beyond loopback needs --http-insecure', async () => {
    const r = await cli(['serve', '--data-dir', tempDir(), '--http', '0.0.0.0:0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--http: 0\.0\.0\.0:0 is not a loopback address.*--http-insecure/);
    expect((await cli(['serve', '--data-dir', tempDir(), '--http-insecure'])).stderr).toMatch(/--http-insecure needs --http/);
    const s = await startServer({ args: ['--http', '0.0.0.0:0', '--http-insecure'] });
    try {
      const ctl = await rawControl(s.controlPath);
      ctl.send('{"jsonrpc":"2.0","id":1,"method":"server.info"}\n');
      const info = (await ctl.next()) as { result: { listeners: string[] } };
      ctl.close();
      expect(info.result.listeners).toContainEqual(expect.stringMatching(/^http 0\.0\.0\.0:\d+$/));
    } finally {
      await s.stop();
    }
  });
});
