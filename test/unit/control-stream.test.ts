// Stream connections on the control socket (protocol/control.md, "Stream connections"), in
// process over a real Unix socket and the real engine: the first-line routing leaves the line
// protocol untouched however its bytes are split; export and import over raw sockets; early
// refusals answered while the client still sends; an export holds its snapshot; an import is
// refused while the head is exported.
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startControlServer, type ControlServer } from '../../src/control/server.ts';
import { openCowStore } from '../../src/storage/index.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';

const MiB = 1024 * 1024;
let dir: string;
let store: CowStore;
let registry: VolumeRegistry;
let server: ControlServer;
const sockets: net.Socket[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-ctlstream-'));
  store = await openCowStore(join(dir, 'data'), { commitIntervalMs: 0 });
  registry = new VolumeRegistry(store, { defaultExport: 'v', readOnly: false });
  await registry.createVolume({ name: 'v', size: 16 * MiB });
  await store.head('v').write(MiB, Buffer.alloc(3 * MiB, 0x5a), { fua: false });
  await registry.createSnapshot('v', 's1', undefined);
  server = await startControlServer(join(dir, 'c.sock'), {
    registry, serverInfo: () => ({ version: '0.1.0', listeners: [], startedAt: new Date() }),
  });
});
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await server.close();
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function connect(): Promise<net.Socket> {
  const s = net.connect(server.path);
  sockets.push(s);
  await new Promise<void>((r, j) => { s.once('connect', r); s.once('error', j); });
  s.on('error', () => undefined);
  return s;
}

/** Everything the server sends until it closes: the first line parsed, and the bytes after it. */
function collect(s: net.Socket): Promise<{ answer: { result?: Record<string, unknown>; error?: { data: { code: string } } }; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('close', () => {
      const all = Buffer.concat(parts);
      const nl = all.indexOf(0x0a);
      if (nl < 0) return reject(new Error(`no answer line: ${all.toString('utf8', 0, 200)}`));
      resolve({ answer: JSON.parse(all.toString('utf8', 0, nl)) as never, rest: all.subarray(nl + 1) });
    });
  });
}

const line = (method: string, params: Record<string, unknown>): string => `${JSON.stringify({ jsonrpc: '2.0', id: 7, method, params })}\n`;

async function exportBytes(params: Record<string, unknown>): Promise<Buffer> {
  const s = await connect();
  const done = collect(s);
  s.end(line('snapshot.export', params));
  const { answer, rest } = await done;
  expect(answer.result, JSON.stringify(answer)).toBeDefined();
  return rest;
}

describe('stream connections', () => {
  it('leave the line protocol alone: a first line split byte by byte, and one without a newline', async () => {
    const s = await connect();
    const got = collect(s);
    const text = `${line('volume.info', { name: 'v' })}${line('server.info', {})}`;
    for (const ch of text) s.write(ch);
    s.end();
    const { answer, rest } = await got;
    expect(answer.result).toMatchObject({ name: 'v', size: 16 * MiB });
    expect(JSON.parse(rest.toString())).toMatchObject({ id: 7, result: { version: '0.1.0' } });

    const t = await connect();
    const got2 = collect(t);
    t.end(line('volume.info', { name: 'v' }).trimEnd()); // half-closed, no newline
    expect((await got2).answer.result).toMatchObject({ name: 'v' });
  });

  it('export, then import with the stream in the same write as the request', async () => {
    const stream = await exportBytes({ volume: 'v', snapshot: 's1' });
    const s = await connect();
    const done = collect(s);
    s.end(Buffer.concat([Buffer.from(line('volume.import', { name: 'w' })), stream]));
    const { answer } = await done;
    expect(answer.result).toMatchObject({ volume: 'w', snapshot: 's1', created: true, dataBytes: 3 * MiB, guid: store.snapshotInfo('v', 's1').guid });
    const a = Buffer.alloc(16 * MiB);
    const b = Buffer.alloc(16 * MiB);
    await store.snapshotView('v', 's1').read(0, a.length, a);
    await store.snapshotView('w', 's1').read(0, b.length, b);
    expect(a.equals(b)).toBe(true);
  });

  it('answers an early refusal while the client is still sending, and drops the rest', async () => {
    const stream = await exportBytes({ volume: 'v', snapshot: 's1' });
    const s = await connect();
    const done = collect(s);
    s.write(line('volume.import', { name: 'v' })); // exists: NAME_TAKEN after the header
    s.write(stream.subarray(0, 4096));
    let answered = false;
    void done.then(() => { answered = true; });
    // Keep sending (20 MiB more) until the answer comes; the server must not stall on it.
    for (let i = 0; i < 20 && !answered; i++) {
      s.write(Buffer.alloc(MiB));
      await new Promise((r) => setTimeout(r, 20));
    }
    s.end();
    const { answer } = await done;
    expect(answer.error?.data.code).toBe('NAME_TAKEN');
    expect(store.listVolumes().map((v) => v.name)).toEqual(['v']);
  });

  it('refuses bad params, a stream method after the first line, and an import onto an exported head', async () => {
    const s = await connect();
    const got = collect(s);
    s.end(line('snapshot.export', { volume: 'v' }));
    expect((await got).answer.error?.data.code).toBe('INVALID_PARAMS');

    const t = await connect();
    const got2 = collect(t);
    t.end(`${line('server.info', {})}${line('snapshot.export', { volume: 'v', snapshot: 's1' })}`);
    const second = JSON.parse((await got2).rest.toString()) as { error: { data: { code: string } } };
    expect(second.error.data.code).toBe('METHOD_NOT_FOUND');

    const lease = registry.acquire('v', () => undefined)!;
    const u = await connect();
    const got3 = collect(u);
    u.end(line('volume.import', { name: 'v' }));
    expect((await got3).answer.error?.data.code).toBe('VOLUME_BUSY');
    lease.release();
  });

  it('holds the exported snapshot: deleting it is refused until the stream is sent', async () => {
    const s = await connect();
    s.pause(); // read nothing: the server blocks on backpressure mid-stream
    s.end(line('snapshot.export', { volume: 'v', snapshot: 's1' }));
    await new Promise((r) => setTimeout(r, 200));
    await expect(registry.deleteSnapshot('v', 's1')).rejects.toMatchObject({ code: 'SNAPSHOT_BUSY' });
    const done = collect(s);
    s.resume();
    await done;
    await registry.deleteSnapshot('v', 's1');
  });

  it('a forced volume delete ends an export blocked on a slow reader', async () => {
    const s = await connect();
    s.pause();
    s.end(line('snapshot.export', { volume: 'v', snapshot: 's1' }));
    await new Promise((r) => setTimeout(r, 200));
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    const t0 = Date.now();
    await expect(registry.deleteVolume('v', false, true)).rejects.toMatchObject({ code: 'VOLUME_BUSY' });
    expect(await registry.deleteVolume('v', true, true)).toEqual({ disconnected: 1, snapshots: ['s1'], clones: [] });
    expect(Date.now() - t0).toBeLessThan(5000);
    s.resume();
    await closed;
    expect(store.listVolumes()).toEqual([]);
  });
});
