// libnbd's nbdcopy and qemu's own NBD client as TLS peers of snapnbd: a 64 MiB random image copied
// in and out over nbds:// (X.509 client certificates and PSK), byte for byte; qemu-img convert and
// qemu-io with --object tls-creds-x509/psk. Then a differential against `qemu-nbd --tls-creds` as
// the server with the same certificates and PSK file: the same clients admitted and refused.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { once } from 'node:events';
import { closeSync, copyFileSync, ftruncateSync, mkdirSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { freePort } from '../helpers/peers.ts';
import { startServer, tempDir, type RunningServer } from '../helpers/server.ts';
import { makeTlsMaterial, X509_ADMISSION_CASES, type TlsTestMaterial } from '../helpers/tls-material.ts';
import { mustRun, sha256File, tool } from './tool.ts';

const MiB = 2 ** 20;
const IMAGE_SIZE = 64 * MiB;
const QEMU_NBD_READY_MS = 30_000;
const CONNECT_POLL_MS = 100;

let pki: TlsTestMaterial;
let dir: string;
let image: string;
let imageSum: string;
/** A directory qemu's tls-creds-psk reads (keys.psk inside). */
let qemuPskDir: string;
let x509: RunningServer;
let psk: RunningServer;
const stops: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  requires('nbdcopy', 'nbdinfo', 'qemu-img', 'qemu-io', 'qemu-nbd', 'openssl');
  pki = makeTlsMaterial();
  dir = tempDir('snapnbd-tls-peers-');
  image = join(dir, 'random.img');
  const fd = openSync(image, 'w');
  for (let off = 0; off < IMAGE_SIZE; off += 16 * MiB) writeSync(fd, randomFillSync(Buffer.alloc(16 * MiB)), 0, 16 * MiB, off);
  closeSync(fd);
  imageSum = await sha256File(image);
  qemuPskDir = join(dir, 'qemu-psk');
  mkdirSync(qemuPskDir);
  copyFileSync(pki.pskFile, join(qemuPskDir, 'keys.psk'));
  x509 = await startServer({ args: ['--volume', `vm=${IMAGE_SIZE}`, '--tls', 'require', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.caCert, '--tls-crl', pki.crl] });
  stops.push(() => x509.stop());
  psk = await startServer({ args: ['--volume', `vm=${IMAGE_SIZE}`, '--tls', 'require', '--tls-psk', pki.pskFile] });
  stops.push(() => psk.stop());
}, 120_000);
afterAll(async () => {
  for (const s of stops.reverse()) await s().catch(() => undefined);
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (pki) rmSync(pki.root, { recursive: true, force: true });
});

const certUri = (port: number, who: keyof TlsTestMaterial['clients']): string =>
  `nbds://127.0.0.1:${port}/vm?tls-certificates=${pki.clients[who].dir}`;
const pskUri = (port: number, user: string, file = pki.pskFile): string => `nbds://${user}@127.0.0.1:${port}/vm?tls-psk-file=${file}`;
const qemuX509 = (who: keyof TlsTestMaterial['clients']): string => `tls-creds-x509,id=tls0,dir=${pki.clients[who].dir},endpoint=client`;
const qemuPsk = (user: string): string => `tls-creds-psk,id=tls0,dir=${qemuPskDir},username=${user},endpoint=client`;
const qemuTarget = (port: number): string => `driver=nbd,host=127.0.0.1,port=${port},export=vm,tls-creds=tls0`;

/** nbdcopy the image in, then out into a fresh file: the hash of what came out. */
async function copyInOut(uri: string, tag: string): Promise<string> {
  await mustRun('nbdcopy', ['--flush', image, uri]);
  const out = join(dir, `out-${tag}.img`);
  await mustRun('nbdcopy', [uri, out]);
  const sum = await sha256File(out);
  rmSync(out);
  return sum;
}

/** Overwrites the export with zeros (so a copy that does nothing cannot pass). */
async function zeroExport(uri: string): Promise<void> {
  const zeros = join(dir, 'zeros.img');
  const fd = openSync(zeros, 'w');
  ftruncateSync(fd, IMAGE_SIZE);
  closeSync(fd);
  await mustRun('nbdcopy', [zeros, uri]);
  rmSync(zeros);
}

describe('nbdcopy over TLS: 64 MiB of random bytes in and out, byte for byte', () => {
  it('X.509 (alice\'s certificate, TLS required with a CA and a CRL)', async () => {
    await zeroExport(certUri(x509.port, 'alice'));
    expect(await copyInOut(certUri(x509.port, 'alice'), 'x509')).toBe(imageSum);
  });

  it('PSK (bob\'s key)', async () => {
    await zeroExport(pskUri(psk.port, 'bob'));
    expect(await copyInOut(pskUri(psk.port, 'bob'), 'psk')).toBe(imageSum);
  });
});

describe('qemu over TLS: qemu-img convert in and out, qemu-io patterns', () => {
  it.each([
    ['X.509', () => ({ port: x509.port, object: qemuX509('bob') })],
    ['PSK', () => ({ port: psk.port, object: qemuPsk('alice') })],
  ] as const)('%s', async (_kind, peer) => {
    const { port, object } = peer();
    await zeroExport(port === x509.port ? certUri(port, 'alice') : pskUri(port, 'alice'));
    await mustRun('qemu-img', ['convert', '-n', '-f', 'raw', '--object', object, image, '--target-image-opts', qemuTarget(port)]);
    const out = join(dir, 'qemu-out.img');
    await mustRun('qemu-img', ['convert', '-O', 'raw', '--object', object, '--image-opts', qemuTarget(port), out]);
    expect(await sha256File(out)).toBe(imageSum);
    rmSync(out);
    // qemu-io writes a pattern and reads it back (-P verifies every byte), at an unaligned spot.
    const io = await mustRun('qemu-io', ['--object', object, '--image-opts', qemuTarget(port),
      '-c', 'write -P 0x5a 1000000 70000', '-c', 'read -P 0x5a 1000000 70000', '-c', 'read -P 0x5a 1000000 1']);
    expect(io.stdout).toMatch(/wrote 70000\/70000 bytes at offset 1000000/);
    expect(io.stdout).toMatch(/read 70000\/70000 bytes at offset 1000000/);
    expect(io.stdout).not.toMatch(/Pattern verification failed/);
  });
});

/** qemu-nbd serving a raw file with tls-creds (x509 with client verification, or psk). */
async function startQemuNbd(object: string): Promise<{ port: number; stop: () => Promise<void> }> {
  const file = join(dir, `qemu-nbd-${Math.random().toString(16).slice(2)}.img`);
  const fd = openSync(file, 'w');
  ftruncateSync(fd, IMAGE_SIZE);
  closeSync(fd);
  const port = await freePort();
  const proc: ChildProcess = spawn('qemu-nbd', ['--persistent', '--shared=8', '-b', '127.0.0.1', '-p', String(port), '-x', 'vm',
    '-f', 'raw', '--object', object, '--tls-creds', 'tls0', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await once(proc, 'exit');
    }
    rmSync(file, { force: true });
  };
  const deadline = Date.now() + QEMU_NBD_READY_MS;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`qemu-nbd exited ${proc.exitCode}: ${stderr}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return { port, stop };
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`qemu-nbd did not listen within ${QEMU_NBD_READY_MS} ms: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, CONNECT_POLL_MS));
  }
}

describe('TLS admission: snapnbd agrees with qemu-nbd --tls-creds', () => {
  const peers: { name: string; x509Port: number; pskPort: number }[] = [];
  beforeAll(async () => {
    peers.push({ name: 'snapnbd', x509Port: x509.port, pskPort: psk.port });
    const qx = await startQemuNbd(`tls-creds-x509,id=tls0,dir=${pki.serverDir},endpoint=server,verify-peer=on`);
    stops.push(qx.stop);
    const qp = await startQemuNbd(`tls-creds-psk,id=tls0,dir=${qemuPskDir},endpoint=server`);
    stops.push(qp.stop);
    peers.push({ name: 'qemu-nbd', x509Port: qx.port, pskPort: qp.port });
  }, 60_000);

  async function admitted(uri: string): Promise<boolean> {
    const r = await tool('nbdinfo', ['--size', uri]);
    if (r.code === 0) expect(r.stdout.trim()).toBe(String(IMAGE_SIZE));
    return r.code === 0;
  }

  it.each(X509_ADMISSION_CASES)('X.509: %s', async (_what, who, expected) => {
    for (const p of peers) expect([p.name, await admitted(certUri(p.x509Port, who))]).toEqual([p.name, expected]);
  });

  it('a plain client is refused by both', async () => {
    for (const p of peers) expect([p.name, await admitted(`nbd://127.0.0.1:${p.x509Port}/vm`)]).toEqual([p.name, false]);
  });

  it('PSK: the right key is admitted, a wrong key and an unknown identity are not', async () => {
    const wrong = join(dir, 'wrong.psk');
    writeFileSync(wrong, `alice:${'cc'.repeat(32)}\nmallory:${'dd'.repeat(32)}\n`);
    for (const p of peers) {
      expect([p.name, await admitted(pskUri(p.pskPort, 'alice'))]).toEqual([p.name, true]);
      expect([p.name, await admitted(pskUri(p.pskPort, 'alice', wrong))]).toEqual([p.name, false]);
      expect([p.name, await admitted(pskUri(p.pskPort, 'mallory', wrong))]).toEqual([p.name, false]);
    }
  });

  it('qemu-img with the same tls-creds objects reads from both', async () => {
    for (const p of peers) {
      for (const [port, object] of [[p.x509Port, qemuX509('alice')], [p.pskPort, qemuPsk('bob')]] as const) {
        const r = await mustRun('qemu-img', ['info', '--output=json', '--object', object, '--image-opts', qemuTarget(port)]);
        expect([p.name, (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size']]).toEqual([p.name, IMAGE_SIZE]);
      }
    }
  });
});
