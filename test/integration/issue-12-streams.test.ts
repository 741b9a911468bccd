// Issue 12, streams: `snapnbd snapshot export | snapnbd volume import` between two running server
// processes with their own data dirs (shell pipes), full and a chain of three incrementals,
// compared byte for byte (nbdcopy + cmp) with the identities kept; a cut stream, a flipped byte
// in the data and in the header, and an incremental on the wrong base (same name, another
// identity) are refused with nothing applied (volume list and content unchanged).
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREAMBLE_LEN, RECORD_HEADER_LEN } from '../../src/backup/stream-format.ts';
import { requires } from '../helpers/requires.ts';
import { SNAPNBD_BIN, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;

function sh(cmd: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', cmd], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(cmd: string): string {
  const r = sh(cmd);
  if (r.status !== 0) throw new Error(`${cmd}\nexit ${r.status}\n${r.stderr}`);
  return r.stdout;
}

describe('issue 12: snapshot streams between two servers', () => {
  let a: RunningServer;
  let b: RunningServer;
  let work: string;
  const cli = (s: RunningServer, args: string): string => `${process.execPath} ${SNAPNBD_BIN} ${args} --control ${s.controlPath}`;
  const json = <T>(s: RunningServer, args: string): T => JSON.parse(ok(`${cli(s, args)} --json`)) as T;
  const qemuWrite = (s: RunningServer, vol: string, cmds: string[]): void => {
    ok(`qemu-io -f raw ${cmds.map((c) => `-c '${c}'`).join(' ')} ${s.uri(vol)} >/dev/null`);
  };
  /** The export's bytes into a file (nbdcopy), and the file's path. */
  const image = (s: RunningServer, exportName: string, file: string): string => {
    const path = join(work, file);
    ok(`nbdcopy ${s.uri(exportName)} ${path}`);
    return path;
  };
  const same = (x: string, y: string): boolean => sh(`cmp ${x} ${y}`).status === 0;
  const snapshots = (s: RunningServer, vol: string): { name: string; guid: string }[] =>
    json<{ snapshots: { name: string; guid: string }[] }>(s, `snapshot list ${vol}`).snapshots.map((x) => ({ name: x.name, guid: x.guid }));
  const volumes = (s: RunningServer): string[] => json<{ volumes: { name: string }[] }>(s, 'volume list').volumes.map((v) => v.name).sort();

  beforeAll(async () => {
    requires('qemu-io', 'nbdcopy', 'cmp');
    work = tempDir('snapnbd-streams-');
    a = await startServer({ args: ['--volume', 'vm1=32M', '--default-export', 'vm1'] });
    b = await startServer({ args: ['--volume', 'other=1M', '--default-export', 'other'] });
  });
  afterAll(async () => {
    await a?.stop();
    await b?.stop();
    if (work) sh(`rm -rf ${work}`);
  });

  it('full, then three incrementals, piped between the servers, byte for byte', () => {
    qemuWrite(a, 'vm1', ['write -P 0x11 0 4M', 'write -P 0x12 20M 1M']);
    ok(cli(a, 'snapshot create vm1@s1'));
    qemuWrite(a, 'vm1', ['write -P 0x21 1M 256k', 'discard 20M 512k']);
    ok(cli(a, 'snapshot create vm1@s2'));
    qemuWrite(a, 'vm1', ['write -P 0x31 31M 1M', 'write -z 0 64k']);
    ok(cli(a, 'snapshot create vm1@s3'));
    qemuWrite(a, 'vm1', ['write -P 0x41 12M 3M']);
    ok(cli(a, 'snapshot create vm1@s4'));

    ok(`${cli(a, 'snapshot export vm1@s1')} | ${cli(b, 'volume import vm1')}`);
    let prev = 's1';
    for (const s of ['s2', 's3', 's4']) {
      const out = ok(`${cli(a, `snapshot export vm1@${s} --since vm1@${prev}`)} | ${cli(b, 'volume import vm1 --json')}`);
      const r = JSON.parse(out) as { base: string; dataBytes: number };
      expect(r.base).toBe(prev);
      // Only the changed chunks travel (s2: 256 KiB written; s3: 1 MiB; s4: 3 MiB).
      expect(r.dataBytes).toBe({ s2: 256 * 1024, s3: MiB, s4: 3 * MiB }[s]);
      prev = s;
    }
    expect(snapshots(b, 'vm1')).toEqual(snapshots(a, 'vm1'));
    for (const s of ['s1', 's2', 's3', 's4']) {
      expect(same(image(a, `vm1@${s}`, `a-${s}.img`), image(b, `vm1@${s}`, `b-${s}.img`)), s).toBe(true);
    }
    expect(same(image(b, 'vm1', 'b-head.img'), join(work, 'a-s4.img'))).toBe(true);
  });

  it('refuses a cut stream and flipped bytes (data, header), applying nothing', () => {
    qemuWrite(a, 'vm1', ['write -P 0x51 8M 2M']);
    ok(cli(a, 'snapshot create vm1@s5'));
    const inc = join(work, 'inc.stream');
    ok(cli(a, `snapshot export vm1@s5 --since s4 -o ${inc}`));
    const full = join(work, 'full.stream');
    ok(cli(a, `snapshot export vm1@s5 -o ${full}`));
    const bytes = readFileSync(inc);
    const fullBytes = readFileSync(full);
    const cut = join(work, 'cut.stream');
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    const dataFlip = join(work, 'data-flip.stream');
    const d = Buffer.from(bytes);
    d.writeUInt8(d.readUInt8(d.length - MiB) ^ 0x04, d.length - MiB);
    writeFileSync(dataFlip, d);
    const headerFlip = join(work, 'header-flip.stream');
    const h = Buffer.from(fullBytes);
    const at = PREAMBLE_LEN + RECORD_HEADER_LEN + 2; // inside the volume size in BEGIN
    h.writeUInt8(h.readUInt8(at) ^ 0x01, at);
    writeFileSync(headerFlip, h);

    const volsBefore = volumes(b);
    const snapsBefore = snapshots(b, 'vm1');
    const headBefore = image(b, 'vm1', 'b-before.img');
    for (const [file, code, name] of [[cut, 'STREAM_TRUNCATED', 'vm1'], [dataFlip, 'STREAM_CORRUPT', 'vm1'], [headerFlip, 'STREAM_CORRUPT', 'fresh']] as const) {
      const r = sh(`cat ${file} | ${cli(b, `volume import ${name}`)}`);
      expect(r.status, file).toBe(1);
      expect(r.stderr, file).toContain(code);
      expect(volumes(b), file).toEqual(volsBefore);
      expect(snapshots(b, 'vm1'), file).toEqual(snapsBefore);
      expect(same(image(b, 'vm1', 'b-after.img'), headBefore), file).toBe(true);
    }
    // A cut full stream leaves no volume behind either, and the export side notices a cut too.
    const r = sh(`head -c ${fullBytes.length - 1} ${full} | ${cli(b, 'volume import fresh')}`);
    expect(r.status).toBe(1);
    expect(volumes(b)).toEqual(volsBefore);
    // The intact stream still applies.
    ok(`${cli(b, `volume import vm1 -i ${inc}`)}`);
    expect(same(image(b, 'vm1@s5', 'b-s5.img'), image(a, 'vm1@s5', 'a-s5.img'))).toBe(true);
  });

  it('refuses an incremental on a base with the same name and another identity', () => {
    ok(cli(b, 'volume create twin --size 32M'));
    qemuWrite(b, 'twin', ['write -P 0x11 0 4M', 'write -P 0x12 20M 1M']); // the same bytes as vm1@s1
    ok(cli(b, 'snapshot create twin@s1'));
    qemuWrite(a, 'vm1', ['write -P 0x61 0 16M']);
    ok(cli(a, 'snapshot create vm1@s6'));
    const before = snapshots(b, 'twin');
    const r = sh(`${cli(a, 'snapshot export vm1@s6 --since s1')} | ${cli(b, 'volume import twin')}`);
    // Refused as soon as the header is read: the exporter sees its pipe closed.
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('WRONG_BASE');
    expect(snapshots(b, 'twin')).toEqual(before);
    expect(volumes(b)).toContain('twin');
  });

  it('CLI: usage errors exit 2, an unreachable server 3, a refused export 1 leaving no -o file', () => {
    const bin = `${process.execPath} ${SNAPNBD_BIN}`;
    expect(sh(`${bin} snapshot export vm1 --control ${a.controlPath} > /dev/null`).status).toBe(2);
    expect(sh(`${bin} snapshot export vm1@s1 --since other@s0 --control ${a.controlPath} > /dev/null`).status).toBe(2);
    expect(sh(`${bin} volume import --control ${b.controlPath} < /dev/null`).status).toBe(2);
    expect(sh(`${bin} snapshot export vm1@s1 --control ${join(work, 'nope.sock')} > /dev/null`).status).toBe(3);
    const out = join(work, 'refused.stream');
    const r = sh(`${bin} snapshot export vm1@nosuch -o ${out} --control ${a.controlPath}`);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('SNAPSHOT_NOT_FOUND');
    expect(sh(`test -e ${out}`).status).not.toBe(0);
  });
});
