// The control socket over a real Unix socket, with an in-memory store behind the registry:
// JSON-RPC framing and errors, batches, notifications, oversize lines, many clients, the
// socket file's mode, stale and live sockets.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_LINE_BYTES } from '../../src/control/framing.ts';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';

const dir = mkdtempSync(join(tmpdir(), 'snapnbd-ctl-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
let server: ControlServer;
let store: FakeStore;
let registry: VolumeRegistry;
const sockets: net.Socket[] = [];

beforeEach(async () => {
  store = new FakeStore();
  registry = new VolumeRegistry(store, { defaultExport: 'vm1', readOnly: false });
  await registry.createVolume({ name: 'vm1', size: 1 << 20 });
  server = await startControlServer(join(dir, `c${n++}.sock`), {
    registry,
    serverInfo: () => ({ version: '0.1.0', listeners: ['nbd 127.0.0.1:1'], startedAt: new Date(Date.now() - 5000) }),
  });
});
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await server.close();
});

/** A raw line client: send bytes, read response lines. */
async function raw(): Promise<{ send(s: string | Buffer): void; next(): Promise<unknown>; lines: string[] }> {
  const s = net.connect(server.path);
  sockets.push(s);
  await new Promise<void>((r, j) => { s.once('connect', r); s.once('error', j); });
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  s.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      waiters.shift()?.();
    }
  });
  let read = 0;
  return {
    lines,
    send: (d) => { s.write(d); },
    async next() {
      while (lines.length <= read) await new Promise<void>((r) => waiters.push(r));
      return JSON.parse(lines[read++]!) as unknown;
    },
  };
}

const req = (id: unknown, method: string, params?: unknown): string =>
  `${JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) })}\n`;

describe('JSON-RPC over the socket', () => {
  it('answers a call, and errors with the standard codes, keeping the connection', async () => {
    const c = await raw();
    c.send(req(1, 'volume.info', { name: 'vm1' }));
    expect(await c.next()).toMatchObject({ jsonrpc: '2.0', id: 1, result: { name: 'vm1', size: 1 << 20 } });
    c.send('{"jsonrpc":"2.0","id":2,"method":\n');
    expect(await c.next()).toMatchObject({ jsonrpc: '2.0', id: null, error: { code: -32700, data: { code: 'PARSE_ERROR' } } });
    c.send(req(3, 'volume.explode'));
    expect(await c.next()).toEqual({ jsonrpc: '2.0', id: 3, error: { code: -32601, message: "unknown method 'volume.explode'", data: { code: 'METHOD_NOT_FOUND' } } });
    c.send(req(4, 'volume.info', { name: 42 }));
    expect(await c.next()).toEqual({ jsonrpc: '2.0', id: 4, error: { code: -32602, message: 'volume.info: "name" must be a string, not number', data: { code: 'INVALID_PARAMS', param: 'name' } } });
    c.send(req(5, 'volume.info', ['vm1']));
    expect(await c.next()).toMatchObject({ id: 5, error: { code: -32602 } });
    c.send('{"jsonrpc":"2.0","id":6}\n');
    expect(await c.next()).toMatchObject({ id: 6, error: { code: -32600, data: { code: 'INVALID_REQUEST' } } });
    c.send(req(7, 'volume.info', { name: 'nope' }));
    expect(await c.next()).toMatchObject({ id: 7, error: { code: -32000, data: { code: 'VOLUME_NOT_FOUND' } } });
    c.send(req('eight', 'volume.create', { name: 'bad@name', size: 4096 }));
    expect(await c.next()).toMatchObject({ id: 'eight', error: { code: -32000, data: { code: 'INVALID_NAME' } } });
    c.send(req(9, 'snapshot.create', { volume: 'vm1', name: 's1' }));
    expect(await c.next()).toMatchObject({ id: 9, result: { volume: 'vm1', name: 's1', state: 'ready' } });
    expect(store.log).toEqual(['createVolume vm1', 'createSnapshot vm1@s1']); // the bad calls changed nothing
  });

  it('runs notifications without answering and answers batches (notifications left out)', async () => {
    const c = await raw();
    c.send(`${JSON.stringify({ jsonrpc: '2.0', method: 'snapshot.create', params: { volume: 'vm1', name: 'n1' } })}\n`);
    c.send(`${JSON.stringify({ jsonrpc: '2.0', method: 'no.such' })}\n`);
    c.send(`[${req(1, 'snapshot.create', { volume: 'vm1', name: 'b1' }).trim()},{"jsonrpc":"2.0","method":"snapshot.create","params":{"volume":"vm1","name":"b2"}},${req(2, 'snapshot.list', { volume: 'vm1' }).trim()},5]\n`);
    const batch = await c.next() as { id: unknown; result?: { snapshots?: { name: string }[] }; error?: { code: number } }[];
    expect(batch.map((r) => r.id)).toEqual([1, 2, null]);
    expect(batch[1]!.result!.snapshots!.map((s) => s.name)).toEqual(['n1', 'b1', 'b2']);
    expect(batch[2]!.error!.code).toBe(-32600);
    c.send('[]\n');
    expect(await c.next()).toMatchObject({ id: null, error: { code: -32600 } });
    c.send(`[${JSON.stringify({ jsonrpc: '2.0', method: 'volume.list' })}]\n`);
    c.send(req(3, 'server.info'));
    expect(await c.next()).toMatchObject({ id: 3, result: { version: '0.1.0', listeners: ['nbd 127.0.0.1:1'], defaultExport: 'vm1' } });
    expect(c.lines.length).toBe(3); // nothing for the notifications or the all-notification batch
  });

  it('refuses an oversize line with one error, discards its rest, and keeps serving', async () => {
    const c = await raw();
    const huge = `{"jsonrpc":"2.0","id":1,"method":"volume.info","params":{"name":"${'x'.repeat(MAX_LINE_BYTES + 10)}"}}\n`;
    // In pieces, like a real stream; the tail of the line must not be parsed as a new request.
    for (let i = 0; i < huge.length; i += 300_000) c.send(huge.slice(i, i + 300_000));
    c.send(req(2, 'volume.list'));
    expect(await c.next()).toEqual({ jsonrpc: '2.0', id: null, error: { code: -32600, message: `request line longer than ${MAX_LINE_BYTES} bytes; the rest of that line was discarded`, data: { code: 'LINE_TOO_LONG', limit: MAX_LINE_BYTES } } });
    expect(await c.next()).toMatchObject({ id: 2, result: { volumes: [{ name: 'vm1' }] } });
    expect(c.lines.length).toBe(2);
  });

  it('serves many clients at once; a bad client does not disturb the others', async () => {
    const bad = await raw();
    bad.send('garbage\n{{{\n');
    const clients = await Promise.all(Array.from({ length: 20 }, () => raw()));
    clients.forEach((c, i) => c.send(req(i, 'snapshot.create', { volume: 'vm1', name: `c${i}` })));
    bad.send('\u0000\u0001\n');
    const results = await Promise.all(clients.map((c) => c.next()));
    results.forEach((r, i) => expect(r).toMatchObject({ id: i, result: { name: `c${i}` } }));
    expect((await bad.next() as { error: { code: number } }).error.code).toBe(-32700);
    expect((await bad.next() as { error: { code: number } }).error.code).toBe(-32700);
    expect((await bad.next() as { error: { code: number } }).error.code).toBe(-32700);
    expect(store.listSnapshots('vm1').length).toBe(20);
  });

  it('answers in request order on one connection, even across pipelined writes', async () => {
    const c = await raw();
    c.send(Array.from({ length: 100 }, (_, i) => req(i, 'snapshot.create', { volume: 'vm1', name: `p${i}` })).join(''));
    for (let i = 0; i < 100; i++) expect(await c.next()).toMatchObject({ id: i, result: { name: `p${i}` } });
  });
});

describe('the socket file', () => {
  it('is a socket with mode 0600', () => {
    const st = statSync(server.path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
  });

  it('a live socket is an error; a stale one is replaced; a regular file is never touched', async () => {
    await expect(startControlServer(server.path, { registry, serverInfo: () => ({ version: '', listeners: [], startedAt: new Date() }) }))
      .rejects.toThrow(/in use by another running server/);
    const stale = join(dir, `stale${n++}.sock`);
    // A process that exits without closing its listener leaves the file (like after SIGKILL).
    execFileSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`]);
    expect(statSync(stale).isSocket()).toBe(true);
    const second = await startControlServer(stale, { registry, serverInfo: () => ({ version: 'x', listeners: [], startedAt: new Date() }) });
    const c = net.connect(second.path);
    await new Promise<void>((r, j) => { c.once('connect', r); c.once('error', j); });
    c.destroy();
    await second.close();
    const plain = join(dir, 'plain.file');
    writeFileSync(plain, 'keep me');
    await expect(startControlServer(plain, { registry, serverInfo: () => ({ version: '', listeners: [], startedAt: new Date() }) }))
      .rejects.toThrow(/not a socket/);
    expect(statSync(plain).size).toBe(7);
  });
});
