// The web console over HTTPS with the NBD server's certificate (serve --tls-cert/--tls-key): Node's
// https client trusting the test CA, Chromium trusting the certificate's key (by its SPKI hash),
// plain HTTP on the port refused, the Origin check on https://, a non-loopback --http allowed
// without --http-insecure, and SIGHUP swapping the certificate (a broken one keeps the old).
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser } from '../helpers/cdp.ts';
import { startConsoleServer, type ConsoleServer } from '../helpers/console.ts';
import { SNAPNBD_BIN, tempDir } from '../helpers/server.ts';
import { makeTlsMaterial, type TlsTestMaterial } from '../helpers/tls-material.ts';
import { mustRun, tool } from '../interop/tool.ts';

let pki: TlsTestMaterial;
let c: ConsoleServer;
/** The files the server was started with; the reload test overwrites them. */
let certFile: string;
let keyFile: string;

beforeAll(async () => {
  pki = makeTlsMaterial();
  certFile = join(pki.root, 'console-cert.pem');
  keyFile = join(pki.root, 'console-key.pem');
  copyFileSync(pki.serverCert, certFile);
  copyFileSync(pki.serverKey, keyFile);
  c = await startConsoleServer({ args: ['--volume', 'vm1=16M', '--tls-cert', certFile, '--tls-key', keyFile, '--log-level', 'info'] });
});
afterAll(async () => {
  await c?.stop();
  if (pki) rmSync(pki.root, { recursive: true, force: true });
});

interface Reply { status: number; body: string; fingerprint: string; protocol: string | null }

/** One HTTPS request trusting only the test CA; `fingerprint` is the certificate the server showed. */
function httpsRequest(opts: { path?: string; method?: string; headers?: Record<string, string>; body?: string }): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port: c.port, method: opts.method ?? 'GET', path: opts.path ?? '/', ca: readFileSync(pki.caCert), agent: false,
      headers: { Host: `127.0.0.1:${c.port}`, ...opts.headers },
    }, (res) => {
      const socket = res.socket as import('node:tls').TLSSocket;
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      const protocol = socket.getProtocol();
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, fingerprint, protocol }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const rpc = (headers: Record<string, string> = {}): Promise<Reply> => httpsRequest({
  method: 'POST', path: '/api/rpc',
  headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${c.token}`, ...headers },
  body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'volume.list', params: {} }),
});

const fingerprintOf = (pemFile: string): string => new X509Certificate(readFileSync(pemFile)).fingerprint256;

describe('the web console over HTTPS', () => {
  it('listens as https, prints an https login link, and answers Node\'s https client with the server certificate', async () => {
    expect(c.base).toBe(`https://127.0.0.1:${c.port}`);
    const url = await mustRun(process.execPath, [SNAPNBD_BIN, 'console', 'url', '--control', c.server.controlPath, '--data-dir', c.server.dataDir]);
    expect(url.stdout.trim()).toBe(`https://127.0.0.1:${c.port}/#token=${c.token}`);
    const page = await httpsRequest({});
    expect(page.status).toBe(200);
    expect(page.protocol).toBe('TLSv1.3');
    expect(page.fingerprint).toBe(fingerprintOf(pki.serverCert));
    const r = await rpc({ Origin: `https://127.0.0.1:${c.port}` });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ result: { volumes: [expect.objectContaining({ name: 'vm1' })] } });
  });

  it('the Origin check expects https://: an http:// origin is another origin', async () => {
    const r = await rpc({ Origin: `http://127.0.0.1:${c.port}` });
    expect(r.status).toBe(403);
    expect(r.body).toContain('CROSS_ORIGIN');
  });

  it('plain HTTP on the HTTPS port gets no answer', async () => {
    const r = await new Promise<string>((resolve) => {
      const req = http.request({ host: '127.0.0.1', port: c.port, path: '/', agent: false }, (res) => resolve(`answered ${res.statusCode}`));
      req.on('error', (e) => resolve(`error ${(e as NodeJS.ErrnoException).code ?? e.message}`));
      req.end();
    });
    expect(r).toMatch(/^error /);
  });

  it('chromium trusting the certificate\'s key logs in; without that it refuses the certificate', async () => {
    const spki = createHash('sha256').update(new X509Certificate(readFileSync(pki.serverCert)).publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
    const trusting = await Browser.launch([`--ignore-certificate-errors-spki-list=${spki}`]);
    try {
      const page = await trusting.newPage();
      await page.goto(`${c.base}/#token=${c.token}`);
      await page.waitFor(`document.querySelector('tr[data-volume="vm1"]')`, 'the vm1 row');
      expect(await page.eval('location.protocol')).toBe('https:');
      expect(page.errors).toEqual([]);
    } finally {
      await trusting.close();
    }
    const plain = await Browser.launch();
    try {
      const page = await plain.newPage();
      const r = await page.call<{ errorText?: string }>('Page.navigate', { url: `${c.base}/#token=${c.token}` });
      expect(r.errorText).toMatch(/ERR_CERT_AUTHORITY_INVALID/);
    } finally {
      await plain.close();
    }
  });

  it('SIGHUP: a broken certificate keeps the current one; a new certificate is served to new connections', async () => {
    writeFileSync(certFile, 'not a certificate\n');
    c.server.proc.kill('SIGHUP');
    await waitFor(() => /reload: TLS material and access rules: kept the current setting/.test(c.server.stderr()));
    expect((await httpsRequest({})).fingerprint).toBe(fingerprintOf(pki.serverCert));
    // A second certificate for the same names, from the same CA.
    const ca = join(pki.root, 'ca');
    execFileSync('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', join(pki.root, 'renewed.csr'), '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
    execFileSync('openssl', ['ca', '-batch', '-config', join(ca, 'ca.cnf'), '-extensions', 'leaf', '-notext', '-days', '30',
      '-in', join(pki.root, 'renewed.csr'), '-out', certFile], { stdio: 'ignore' });
    const before = c.server.stderr().length;
    c.server.proc.kill('SIGHUP');
    await waitFor(() => /reload: TLS material and access rules: reloaded/.test(c.server.stderr().slice(before)));
    const renewed = fingerprintOf(certFile);
    expect(renewed).not.toBe(fingerprintOf(pki.serverCert));
    expect((await httpsRequest({})).fingerprint).toBe(renewed);
    expect((await rpc()).status).toBe(200);
  });
});

describe('--http on a non-loopback address', () => {
  it('is allowed with a certificate (HTTPS), refused in plain HTTP without --http-insecure', async () => {
    const dir = tempDir();
    try {
      const plain = await tool(process.execPath, [SNAPNBD_BIN, 'serve', '--data-dir', dir, '--listen', '127.0.0.1:0', '--http', '0.0.0.0:0']);
      expect(plain.code).toBe(2);
      expect(plain.stderr).toMatch(/give --tls-cert and --tls-key for HTTPS, or add --http-insecure/);
      const withCert = await startConsoleServer({ args: ['--http', '0.0.0.0:0', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey] });
      try {
        expect(withCert.base).toMatch(/^https:/);
      } finally {
        await withCert.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

async function waitFor(pred: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
