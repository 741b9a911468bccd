// Test PKI made with openssl (`openssl ca`, so certificates can be back-dated and revoked): a CA,
// a server certificate for localhost/127.0.0.1, client certificates (alice, bob, one expired, one
// revoked, one from another CA), a CRL, and a PSK file. Each client also gets a directory in the
// layout GnuTLS clients (libnbd tls-certificates=DIR, qemu tls-creds-x509 dir=) expect.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './server.ts';

export interface TlsClientFiles {
  cert: string;
  key: string;
  /** ca-cert.pem, client-cert.pem, client-key.pem (and ca-crl.pem for servers' dirs). */
  dir: string;
}

/** The X.509 client identities a TLS server must admit or refuse: [what, client, admitted]. */
export const X509_ADMISSION_CASES = [
  ['alice (valid certificate)', 'alice', true],
  ['bob (valid certificate)', 'bob', true],
  ['an expired certificate', 'expired', false],
  ['a revoked certificate', 'revoked', false],
  ['a certificate from another CA', 'stranger', false],
] as const;

export interface TlsTestMaterial {
  root: string;
  caCert: string;
  caKey: string;
  crl: string;
  serverCert: string;
  serverKey: string;
  /** ca-cert.pem, server-cert.pem, server-key.pem: for nbdkit/qemu-nbd as TLS servers. */
  serverDir: string;
  clients: Record<'alice' | 'bob' | 'expired' | 'revoked' | 'stranger', TlsClientFiles>;
  /** identity:hexkey lines for alice and bob (psktool format). */
  pskFile: string;
  pskKeys: Record<'alice' | 'bob', string>;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function caConfig(dir: string): string {
  mkdirSync(join(dir, 'newcerts'), { recursive: true });
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '1000\n');
  writeFileSync(join(dir, 'crlnumber'), '1000\n');
  const cnf = join(dir, 'ca.cnf');
  writeFileSync(cnf, [
    '[ ca ]', 'default_ca = CA_default',
    '[ CA_default ]', `dir = ${dir}`, 'database = $dir/index.txt', 'new_certs_dir = $dir/newcerts',
    'certificate = $dir/ca-cert.pem', 'private_key = $dir/ca-key.pem', 'serial = $dir/serial',
    'crlnumber = $dir/crlnumber', 'default_md = sha256', 'default_days = 365', 'default_crl_days = 30',
    'policy = policy_any', 'copy_extensions = copy', 'unique_subject = no', 'email_in_dn = no',
    '[ policy_any ]', 'commonName = supplied',
    '[ leaf ]', 'basicConstraints = CA:FALSE', 'keyUsage = digitalSignature, keyEncipherment',
    '',
  ].join('\n'));
  return cnf;
}

function makeCa(dir: string, cn: string): string {
  mkdirSync(dir, { recursive: true });
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem',
    '-subj', `/CN=${cn}`, '-days', '3650'], dir);
  return caConfig(dir);
}

/** A leaf signed by the CA in `caDir`; `dates` back-dates it (openssl ca -startdate/-enddate). */
function leaf(caDir: string, cnf: string, name: string, subjectAltName: string, eku: string, dates?: [string, string]): { cert: string; key: string } {
  const key = join(caDir, `${name}-key.pem`);
  const csr = join(caDir, `${name}.csr`);
  const cert = join(caDir, `${name}-cert.pem`);
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${name}`,
    '-addext', `subjectAltName=${subjectAltName}`, '-addext', `extendedKeyUsage=${eku}`], caDir);
  const validity = dates ? ['-startdate', dates[0], '-enddate', dates[1]] : ['-days', '365'];
  openssl(['ca', '-batch', '-config', cnf, '-extensions', 'leaf', '-notext', '-in', csr, '-out', cert, ...validity], caDir);
  return { cert, key };
}

export function makeTlsMaterial(): TlsTestMaterial {
  const root = tempDir('snapnbd-tls-');
  const caDir = join(root, 'ca');
  const cnf = makeCa(caDir, 'snapnbd test CA');
  const server = leaf(caDir, cnf, 'localhost', 'DNS:localhost,IP:127.0.0.1', 'serverAuth');
  const mk = (name: string, dates?: [string, string]): { cert: string; key: string } =>
    leaf(caDir, cnf, name, `DNS:${name}.example,email:${name}@example.com`, 'clientAuth', dates);
  const alice = mk('alice');
  const bob = mk('bob');
  const expired = mk('expired', ['20200101000000Z', '20200201000000Z']);
  const revoked = mk('revoked');
  openssl(['ca', '-config', cnf, '-revoke', revoked.cert], caDir);
  const crl = join(caDir, 'crl.pem');
  openssl(['ca', '-config', cnf, '-gencrl', '-out', crl], caDir);
  const otherDir = join(root, 'other-ca');
  const otherCnf = makeCa(otherDir, 'some other CA');
  const stranger = leaf(otherDir, otherCnf, 'stranger', 'DNS:stranger.example', 'clientAuth');

  const caCert = join(caDir, 'ca-cert.pem');
  const clientDir = (name: string, files: { cert: string; key: string }): TlsClientFiles => {
    const dir = join(root, 'clients', name);
    mkdirSync(dir, { recursive: true });
    copyFileSync(caCert, join(dir, 'ca-cert.pem'));
    copyFileSync(files.cert, join(dir, 'client-cert.pem'));
    copyFileSync(files.key, join(dir, 'client-key.pem'));
    return { ...files, dir };
  };
  const serverDir = join(root, 'server');
  mkdirSync(serverDir, { recursive: true });
  copyFileSync(caCert, join(serverDir, 'ca-cert.pem'));
  copyFileSync(server.cert, join(serverDir, 'server-cert.pem'));
  copyFileSync(server.key, join(serverDir, 'server-key.pem'));
  copyFileSync(crl, join(serverDir, 'ca-crl.pem'));

  const pskKeys = { alice: 'a1'.repeat(32), bob: 'b0'.repeat(32) };
  const pskFile = join(root, 'keys.psk');
  writeFileSync(pskFile, `alice:${pskKeys.alice}\nbob:${pskKeys.bob}\n`, { mode: 0o600 });
  return {
    root, caCert, caKey: join(caDir, 'ca-key.pem'), crl, serverCert: server.cert, serverKey: server.key, serverDir,
    clients: {
      alice: clientDir('alice', alice), bob: clientDir('bob', bob), expired: clientDir('expired', expired),
      revoked: clientDir('revoked', revoked), stranger: clientDir('stranger', stranger),
    },
    pskFile, pskKeys,
  };
}
