// RawGetter: GET responses read by net's `onread` straight into the caller's buffer, against a
// local node:http server that answers in pieces, with errors, cut short, chunked, or too long.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseHead, RAW_HEAD_MAX, RawGetter, RawUnsupported } from '../../src/backup/s3/raw-get.ts';
import { S3Client } from '../../src/backup/s3/client.ts';

const body = randomBytes(1024 * 1024 + 123);
let server: http.Server;
let port = 0;
let connections = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const u = (req.url ?? '').replace(/\/$/, '');
    if (u === '/pieces') {
      // The body in uneven pieces with pauses: many socket reads, some ending mid-way.
      res.writeHead(200, { 'content-length': String(body.length) });
      let off = 0;
      const next = (): void => {
        if (off >= body.length) { res.end(); return; }
        const n = Math.min(body.length - off, 1 + Math.floor(Math.random() * 200_000));
        res.write(body.subarray(off, off + n));
        off += n;
        setTimeout(next, 1);
      };
      next();
    } else if (u === '/small') {
      res.writeHead(200, { 'content-length': '5' });
      res.end('hello');
    } else if (u === '/missing') {
      const xml = '<?xml version="1.0"?><Error><Code>NoSuchKey</Code></Error>';
      res.writeHead(404, { 'content-length': String(xml.length) });
      res.end(xml);
    } else if (u === '/short') {
      res.writeHead(200, { 'content-length': '1000' });
      res.write(Buffer.alloc(500));
      setTimeout(() => res.socket?.destroy(), 20);
    } else if (u === '/chunked') {
      res.writeHead(200, { 'transfer-encoding': 'chunked' });
      res.end('chunked body');
    } else if (u === '/stall') {
      res.writeHead(200, { 'content-length': '10' });
      res.write('abc'); // and nothing more
    } else if (u === '/long') {
      // Announces 4 bytes, sends 8 in one write: the extra must not be taken as the next answer.
      res.socket!.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcdEFGH');
    }
  });
  server.on('connection', () => { connections++; });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

const req = (path: string): string => `GET ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n\r\n`;

describe('parseHead', () => {
  it('reads status, lower-cased headers and the head length; null until the blank line', () => {
    const h = Buffer.from('HTTP/1.1 206 Partial Content\r\nContent-Length: 12\r\nETag: "x"\r\n\r\nBODY');
    expect(parseHead(h)).toEqual({ status: 206, headers: { 'content-length': '12', etag: '"x"' }, length: h.length - 4 });
    expect(parseHead(h.subarray(0, 40))).toBeNull();
    expect(() => parseHead(Buffer.from('SMTP 250 ok\r\n\r\n'))).toThrow(/status line/);
    expect(() => parseHead(Buffer.from('HTTP/1.1 200 OK\r\nno colon here\r\n\r\n'))).toThrow(/header line/);
  });
});

describe('RawGetter', () => {
  it('receives a body in pieces into the caller\'s buffer at its place, over one kept-alive connection', async () => {
    const g = new RawGetter('127.0.0.1', port, 4);
    try {
      const before = connections;
      for (let i = 0; i < 3; i++) {
        const into = Buffer.alloc(body.length + 10);
        const r = await g.get(req('/pieces'), into, 5000);
        expect(r.status).toBe(200);
        expect(r.body.buffer === into.buffer).toBe(true); // no copy: a view of `into`
        expect(r.body.length).toBe(body.length);
        expect(r.body.equals(body)).toBe(true);
      }
      expect(connections - before).toBe(1);
      expect(g.connections).toBe(1);
    } finally {
      g.close();
    }
  });

  it('a body larger than `into`, an error status, and no `into` come back in their own Buffer', async () => {
    const g = new RawGetter('127.0.0.1', port, 4);
    try {
      const small = Buffer.alloc(3);
      const r1 = await g.get(req('/small'), small, 5000);
      expect(r1.body.toString()).toBe('hello');
      expect(r1.body.buffer === small.buffer).toBe(false);
      const r2 = await g.get(req('/missing'), Buffer.alloc(4096), 5000);
      expect(r2.status).toBe(404);
      expect(r2.body.toString()).toContain('NoSuchKey');
      const r3 = await g.get(req('/small'), null, 5000);
      expect(r3.body.toString()).toBe('hello');
    } finally {
      g.close();
    }
  });

  it('a body cut short, a stall, a body longer than announced: errors, and the connection is not reused', async () => {
    const g = new RawGetter('127.0.0.1', port, 4);
    try {
      await expect(g.get(req('/short'), Buffer.alloc(2000), 5000)).rejects.toThrow(/short body: 500 of 1000 bytes/);
      await expect(g.get(req('/stall'), Buffer.alloc(20), 200)).rejects.toThrow(/idle timeout/);
      await expect(g.get(req('/long'), Buffer.alloc(20), 5000)).rejects.toThrow(/long body|no request pending/);
      expect(g.connections).toBe(0);
      const r = await g.get(req('/small'), Buffer.alloc(10), 5000); // a fresh connection works
      expect(r.body.toString()).toBe('hello');
    } finally {
      g.close();
    }
  });

  it('a chunked answer is RawUnsupported (the caller falls back to node:http)', async () => {
    const g = new RawGetter('127.0.0.1', port, 4);
    try {
      const e = await g.get(req('/chunked'), Buffer.alloc(100), 5000).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(RawUnsupported);
    } finally {
      g.close();
    }
  });

  it('an abort fails the request in flight; a head longer than the limit is refused', async () => {
    const g = new RawGetter('127.0.0.1', port, 4);
    try {
      const ac = new AbortController();
      const p = g.get(req('/stall'), Buffer.alloc(20), 5000, ac.signal);
      setTimeout(() => ac.abort(), 50);
      await expect(p).rejects.toThrow(/aborted/);
    } finally {
      g.close();
    }
    const raw = http.createServer();
    raw.on('connection', (s) => s.write(`HTTP/1.1 200 OK\r\nx: ${'a'.repeat(RAW_HEAD_MAX)}\r\n\r\n`));
    await new Promise<void>((r) => raw.listen(0, '127.0.0.1', r));
    const g2 = new RawGetter('127.0.0.1', (raw.address() as AddressInfo).port, 1);
    try {
      await expect(g2.get(req('/'), Buffer.alloc(10), 5000)).rejects.toThrow(/head longer/);
    } finally {
      g2.close();
      raw.closeAllConnections();
      await new Promise((r) => raw.close(r));
    }
  });
});

describe('S3Client GET into a buffer', () => {
  const client = (): S3Client => new S3Client({ endpoint: new URL(`http://127.0.0.1:${port}/`), region: 'us-east-1', credentials: { accessKeyId: 'k', secretAccessKey: 's' } }, { attempts: 1 });

  it('goes over the raw path (the body lands in `into`) and falls back to node:http for a chunked answer', async () => {
    const c = client();
    try {
      const into = Buffer.alloc(body.length);
      const got = await c.get('pieces', '', undefined, into);
      expect(got!.buffer === into.buffer).toBe(true);
      expect(got!.equals(body)).toBe(true);
      const chunked = await c.get('chunked', '', undefined, Buffer.alloc(100));
      expect(chunked!.toString()).toBe('chunked body');
      expect((await c.get('missing', '', undefined, Buffer.alloc(100)))).toBeNull();
    } finally {
      c.close();
    }
  });
});
