// The same TLS client cases against snapnbd and against `nbdkit --tls=require` with the same
// certificates and PSK file (the reference behaviour): who gets in and who is refused must agree.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { startNbdkit, type Peer } from '../helpers/peers.ts';
import { startServer, type RunningServer } from '../helpers/server.ts';
import { makeTlsMaterial, X509_ADMISSION_CASES, type TlsTestMaterial } from '../helpers/tls-material.ts';
import { tool } from './tool.ts';

const SIZE = 16 * 2 ** 20;
let pki: TlsTestMaterial;
const peers: { name: string; x509Port: number; pskPort: number }[] = [];
const stops: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  requires('nbdkit', 'nbdinfo');
  pki = makeTlsMaterial();
  const x509: RunningServer = await startServer({ args: ['--volume', `vm=${SIZE}`, '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.caCert, '--tls-crl', pki.crl] });
  stops.push(() => x509.stop());
  const psk: RunningServer = await startServer({ args: ['--volume', `vm=${SIZE}`, '--tls-psk', pki.pskFile] });
  stops.push(() => psk.stop());
  peers.push({ name: 'snapnbd', x509Port: x509.port, pskPort: psk.port });
  const kx: Peer = await startNbdkit({ plugin: ['--tls=require', `--tls-certificates=${pki.serverDir}`, '--tls-verify-peer', 'memory', String(SIZE)] });
  stops.push(() => kx.stop());
  const kp: Peer = await startNbdkit({ plugin: ['--tls=require', `--tls-psk=${pki.pskFile}`, 'memory', String(SIZE)] });
  stops.push(() => kp.stop());
  peers.push({ name: 'nbdkit', x509Port: kx.port, pskPort: kp.port });
}, 180_000);
afterAll(async () => {
  for (const s of stops) await s().catch(() => undefined);
  if (pki) rmSync(pki.root, { recursive: true, force: true });
});

async function admitted(uri: string): Promise<boolean> {
  const r = await tool('nbdinfo', ['--size', uri]);
  if (r.code === 0) expect(r.stdout.trim()).toBe(String(SIZE));
  return r.code === 0;
}

describe('TLS admission: snapnbd agrees with nbdkit', () => {
  it.each(X509_ADMISSION_CASES)('X.509: %s', async (_what, who, expected) => {
    for (const p of peers) {
      expect([p.name, await admitted(`nbds://127.0.0.1:${p.x509Port}/vm?tls-certificates=${pki.clients[who].dir}`)]).toEqual([p.name, expected]);
    }
  });

  it('a plain client is refused by both', async () => {
    for (const p of peers) expect([p.name, await admitted(`nbd://127.0.0.1:${p.x509Port}/vm`)]).toEqual([p.name, false]);
  });

  it('PSK: the right key is admitted, a wrong key and an unknown identity are not', async () => {
    const wrong = join(pki.root, 'wrong.psk');
    writeFileSync(wrong, `alice:${'cc'.repeat(32)}\nmallory:${'dd'.repeat(32)}\n`);
    for (const p of peers) {
      const base = `127.0.0.1:${p.pskPort}/vm`;
      expect([p.name, await admitted(`nbds://alice@${base}?tls-psk-file=${pki.pskFile}`)]).toEqual([p.name, true]);
      expect([p.name, await admitted(`nbds://alice@${base}?tls-psk-file=${wrong}`)]).toEqual([p.name, false]);
      expect([p.name, await admitted(`nbds://mallory@${base}?tls-psk-file=${wrong}`)]).toEqual([p.name, false]);
    }
  });
});
