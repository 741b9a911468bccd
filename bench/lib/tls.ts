// TLS rows (issue 14): snapnbd `--tls require` with a CA beside `nbdkit [--filter=cow] --tls=require
// --tls-verify-peer`, the same certificates (test/helpers/tls-material.ts); PSK rows: all with
// `--tls-psk` and the same key file (psktool's `identity:hexkey`). fio's nbd engine cannot do TLS,
// so fio talks plain NBD over a Unix socket to a bridge, `nbdkit nbd`, whose libnbd client carries
// the requests to the server over TLS as alice (her client certificate, or her PSK). The same
// bridge without TLS gives the baseline, so the bridge's own cost cancels out of "TLS vs plain".
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { makeTlsMaterial, type TlsTestMaterial } from '../../test/helpers/tls-material.ts';
import type { PeerName } from './config.ts';
import type { PeerInstance } from './peers.ts';
import { spawnTracked, waitListening } from './procs.ts';

/**
 * How the client reaches the server: through the bridge over TLS with certificates (`tls`) or a
 * pre-shared key (`psk`), or through the bridge in clear (`bridge`).
 */
export type Via = 'tls' | 'psk' | 'bridge';

/** Whether the server must require TLS for this path. */
export function viaTls(via: Via | undefined): via is 'tls' | 'psk' {
  return via === 'tls' || via === 'psk';
}

let material: TlsTestMaterial | null = null;

/** The run's certificates, made once (a CA, the server's, client certificates). */
export function benchTls(): TlsTestMaterial {
  if (!material) {
    material = makeTlsMaterial();
    process.on('exit', () => { if (material) rmSync(material.root, { recursive: true, force: true }); });
  }
  return material;
}

/** Server options for TLS required: client certificates checked against the CA, or the PSK file. */
export function tlsServerArgs(peer: PeerName, via: 'tls' | 'psk'): string[] {
  const m = benchTls();
  const nbdkit = peer === 'nbdkit-file' || peer === 'nbdkit-cow';
  if (via === 'psk') return nbdkit ? ['--tls=require', `--tls-psk=${m.pskFile}`] : ['--tls', 'require', '--tls-psk', m.pskFile];
  if (nbdkit) return ['--tls=require', `--tls-certificates=${m.serverDir}`, '--tls-verify-peer'];
  return ['--tls', 'require', '--tls-cert', m.serverCert, '--tls-key', m.serverKey, '--tls-ca', m.caCert];
}

/** The bridge in front of INST; returns the plain URI fio uses, and a stop. */
export async function startBridge(inst: PeerInstance, via: Via, dir: string): Promise<{ uri: string; stop(): Promise<void> }> {
  const u = /^nbd:\/\/([^:/]+):(\d+)\/(.*)$/.exec(inst.uri);
  if (!u) throw new Error(`bridge: not a TCP NBD URI: ${inst.uri}`);
  const sock = join(dir, `bridge-${inst.pid}.sock`);
  const tls = via === 'tls' ? ['tls=require', `tls-certificates=${benchTls().clients.alice.dir}`]
    : via === 'psk' ? ['tls=require', `tls-psk=${benchTls().pskFile}`, 'tls-username=alice'] : [];
  const p = spawnTracked('nbdkit', ['-f', '-U', sock, 'nbd', `hostname=${u[1]}`, `port=${u[2]}`, `export=${u[3]}`, ...tls]);
  await waitListening(p, { path: sock });
  return { uri: `nbd+unix:///?socket=${sock}`, async stop() { await p.stop(); rmSync(sock, { force: true }); } };
}
