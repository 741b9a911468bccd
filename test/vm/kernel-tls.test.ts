// The Linux kernel's NBD client over TLS (test/vm/README.md): nbd-client 3.24 does the TLS
// handshake with GnuTLS and stays resident as a userspace proxy between the kernel's socket and the
// TLS session. Against `serve --tls require --tls-ca`: alice's certificate attaches and carries an
// ext4 file system (files written, read back after a fresh attach); a certificate from another
// CA, a revoked one and a plain client get no device.
import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { tempDir, type RunningServer } from '../helpers/server.ts';
import { makeTlsMaterial, type TlsTestMaterial } from '../helpers/tls-material.ts';
import { GUEST_NBD_HOST, GUEST_NBD_PORT, Guest } from './guest.ts';
import { startVmServer } from './vm-server.ts';
import { controlCall } from './control.ts';
import { SCENARIO_TIMEOUT_MS, detach, eventually, exportStats, freePort, listChecksums, writeRandomFiles } from './helpers.ts';

/** Where the guest keeps each client's PEM files. */
const GUEST_TLS_DIR = '/tmp/tls';
/** The server certificate names localhost; the guest dials the forwarder's address. */
const SERVER_NAME = 'localhost';
const CLIENTS = ['alice', 'stranger', 'revoked'] as const;

describe('Linux kernel nbd-client over TLS in a VM', () => {
  let dataDir = '';
  let server: RunningServer | null = null;
  let guest: Guest | null = null;
  let pki: TlsTestMaterial;

  /** nbd-client with WHO's certificate and key and the test CA (-tlshostname: the cert's name). */
  const tlsAttach = (who: (typeof CLIENTS)[number], device: string, name: string): Promise<{ status: number; output: string }> =>
    guest!.run(`/sbin/nbd-client ${GUEST_NBD_HOST} ${GUEST_NBD_PORT} ${device} -N ${name} -enable-tls `
      + `-certfile ${GUEST_TLS_DIR}/${who}-cert.pem -keyfile ${GUEST_TLS_DIR}/${who}-key.pem `
      + `-cacertfile ${GUEST_TLS_DIR}/ca.pem -tlshostname ${SERVER_NAME} 2>&1`);

  /** The device's size in sectors: 0 while nothing is attached. */
  const deviceSectors = async (device: string): Promise<number> =>
    Number(/^\d+$/m.exec(await guest!.sh(`cat /sys/block/${device.replace('/dev/', '')}/size`))?.[0] ?? NaN);

  beforeAll(async () => {
    requires('qemu-system-x86_64', 'busybox', 'cpio', 'openssl');
    pki = makeTlsMaterial();
    dataDir = tempDir('snapnbd-vm-tls-');
    const port = await freePort();
    server = await startVmServer({ dataDir, args: [
      '--listen', `127.0.0.1:${port}`, '--volume', 'vm=256M', '--volume', 'other=64M',
      '--tls', 'require', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.caCert, '--tls-crl', pki.crl,
      '--log-level', 'info',
    ] });
    guest = await Guest.boot({ nbdPort: port, name: 'kernel-tls' });
    const files: [string, string][] = [['ca.pem', pki.caCert]];
    for (const who of CLIENTS) files.push([`${who}-cert.pem`, pki.clients[who].cert], [`${who}-key.pem`, pki.clients[who].key]);
    // run() ships the command base64-encoded: a here-document carries each PEM file as it is.
    await guest.sh([`mkdir -p ${GUEST_TLS_DIR}`, ...files.map(([name, path]) =>
      `cat > ${GUEST_TLS_DIR}/${name} <<'PEM_END'\n${readFileSync(path, 'utf8').trimEnd()}\nPEM_END`)].join('\n'));
  }, SCENARIO_TIMEOUT_MS);

  afterAll(async () => {
    await guest?.close();
    await server?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    if (pki) rmSync(pki.root, { recursive: true, force: true });
  }, SCENARIO_TIMEOUT_MS);

  it('alice attaches over TLS with her certificate: ext4 made, files written, read back through a new attach', async () => {
    const g = guest!;
    const ctl = server!.controlPath;
    const first = await tlsAttach('alice', '/dev/nbd0', 'vm');
    expect(first.status, first.output).toBe(0);
    expect(await deviceSectors('/dev/nbd0')).toBe(256 * 2048);
    // The server sees alice, over TLS, on this export (nbd-client 3.24 asks GnuTLS for TLS 1.2).
    const stats = await controlCall(ctl, 'server.stats') as { connections: { identity: string[]; tls: string | null; export: string | null }[] };
    expect(stats.connections).toContainEqual(expect.objectContaining({ identity: ['alice', 'alice.example', 'alice@example.com'], tls: expect.stringMatching(/^TLSv1\.[23]$/), export: 'vm' }));
    await g.sh('/sbin/mkfs.ext4 -q -F /dev/nbd0 && mkdir -p /mnt/tls && mount -o noinit_itable /dev/nbd0 /mnt/tls');
    const written = await writeRandomFiles(g, '/mnt/tls', { a: 160, b: 40, c: 1 });
    await g.sh('sync && umount /mnt/tls');
    await detach(g, '/dev/nbd0');
    await eventually('the TLS connection closed', () => exportStats(ctl, 'vm'), (s) => s?.connections === 0);
    const again = await tlsAttach('alice', '/dev/nbd0', 'vm');
    expect(again.status, again.output).toBe(0);
    await g.sh('mount -o ro,noload /dev/nbd0 /mnt/tls');
    expect(await listChecksums(g, '/mnt/tls')).toEqual(written);
    await g.sh('umount /mnt/tls');
    await detach(g, '/dev/nbd0');
  }, SCENARIO_TIMEOUT_MS);

  it.each([
    ['a certificate from another CA', 'stranger', /client certificate refused|TLS handshake failed/],
    ['a revoked certificate', 'revoked', /CERT_REVOKED/],
  ] as const)('%s gets no device', async (_what, who, logged) => {
    const r = await tlsAttach(who, '/dev/nbd1', 'other');
    expect(r.status, r.output).not.toBe(0);
    expect(server!.stderr()).toMatch(logged);
    expect(await deviceSectors('/dev/nbd1')).toBe(0);
    expect((await exportStats(server!.controlPath, 'other'))?.connections ?? 0).toBe(0);
  }, SCENARIO_TIMEOUT_MS);

  it('a plain nbd-client (no TLS) against --tls require gets no device', async () => {
    const r = await guest!.run(`/sbin/nbd-client ${GUEST_NBD_HOST} ${GUEST_NBD_PORT} /dev/nbd1 -N other 2>&1`);
    expect(r.status, r.output).not.toBe(0);
    expect(await deviceSectors('/dev/nbd1')).toBe(0);
  }, SCENARIO_TIMEOUT_MS);
});
