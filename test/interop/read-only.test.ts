// Read-only exports: a `--read-only` server (and nbdkit -r as the reference) advertises READ_ONLY
// and refuses every write kind with EPERM, draining the payload, while reads keep working.
// (VOLUME@SNAPSHOT views belong here too once snapshots can be created; see the report.)
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { rmSync } from 'node:fs';
import { PEER_KINDS, PEER_VOLUME, startPeer, startSnapnbd, type Peer } from '../helpers/peers.ts';
import { tempDir } from '../helpers/server.ts';
import { NBD, RawClient } from '../helpers/raw-client.ts';
import { NBDSH_ENV, mustRun, tool } from './tool.ts';

const MARK = 'written before the server went read-only';

/** Every write kind through libnbd is refused by the server with EPERM; reads still work. */
async function writesRefusedWithEperm(uri: string): Promise<void> {
  // libnbd's strict mode would refuse locally; turn it off so the server has to answer.
  const r = await tool('nbdsh', ['-u', uri, '-c', [
    'h.set_strict_mode(0)',
    'def attempt(name, f):',
    '    try:',
    '        f()',
    '        print(name, "accepted")',
    '    except nbd.Error as e:',
    '        print(name, "refused:", e.string)',
    'attempt("write", lambda: h.pwrite(b"x" * 4096, 0))',
    'attempt("write-fua", lambda: h.pwrite(b"x" * 512, 8192, nbd.CMD_FLAG_FUA))',
    'attempt("zero", lambda: h.zero(65536, 0))',
    'attempt("trim", lambda: h.trim(65536, 0))',
    'print("read", len(h.pread(4096, 0)), h.pread(4096, 0) == bytes(4096))',
  ].join('\n')], { env: NBDSH_ENV });
  expect(r.code, r.stderr).toBe(0);
  for (const op of ['write', 'write-fua', 'zero', 'trim']) {
    expect(r.stdout).toMatch(new RegExp(`^${op} refused: .*Operation not permitted`, 'm'));
  }
  expect(r.stdout).toContain('read 4096 True'); // offset 0 was never written: the refusals changed nothing
}

describe('read-only exports', () => {
  it.each(PEER_KINDS)('refuse writes, zeroes and trims with EPERM; reads work (%s)', async (kind) => {
    requires('nbdsh', 'nbdinfo', 'nbdkit');
    const peer = await startPeer(kind, { size: '16M', readOnly: true });
    try {
      const info = JSON.parse((await mustRun('nbdinfo', ['--json', peer.uri()])).stdout) as { exports: { is_read_only: boolean }[] };
      expect(info.exports[0]!.is_read_only).toBe(true);
      await writesRefusedWithEperm(peer.uri());
    } finally {
      await peer.stop();
    }
  });

  it('a volume written read-write reads the same through a --read-only restart, and a raw WRITE gets EPERM with its payload drained', async () => {
    requires('nbdsh');
    const dataDir = tempDir();
    const rw = await startSnapnbd({ size: '16M', snapnbd: { dataDir } });
    let ro: Peer | null = null;
    try {
      await mustRun('nbdsh', ['-u', rw.uri(), '-c', `h.pwrite(${JSON.stringify(MARK)}.encode(), 4096)`], { env: NBDSH_ENV });
      expect(await rw.stop()).toBe(0);
      ro = await startSnapnbd({ size: '16M', readOnly: true, snapnbd: { dataDir } });
      const c = await RawClient.connect(ro.port);
      await c.handshake();
      const { flags } = await c.go(PEER_VOLUME);
      expect(flags & 2).toBe(2); // NBD_FLAG_READ_ONLY
      c.request({ type: NBD.CMD_WRITE, cookie: 1n, offset: 4096, payload: Buffer.alloc(4096, 0x41) });
      expect(await c.simpleReply()).toMatchObject({ error: NBD.EPERM, cookie: 1n });
      c.request({ type: NBD.CMD_WRITE_ZEROES, cookie: 2n, offset: 0, length: 65536 });
      expect(await c.simpleReply()).toMatchObject({ error: NBD.EPERM, cookie: 2n });
      c.request({ type: NBD.CMD_READ, cookie: 3n, offset: 4096, length: MARK.length });
      const back = await c.simpleReply(MARK.length);
      expect(back.error).toBe(0);
      expect(back.data.toString()).toBe(MARK);
      c.destroy();
      await writesRefusedWithEperm(ro.uri());
      const still = await mustRun('nbdsh', ['-u', ro.uri(), '-c', `print(h.pread(${MARK.length}, 4096).decode())`], { env: NBDSH_ENV });
      expect(still.stdout.trim()).toBe(MARK);
    } finally {
      await rw.stop();
      await ro?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
