// Online resize end to end (bin/snapnbd, its own process): `snapnbd volume resize` grows a volume
// while an NBD client is attached (that connection keeps the old size and keeps working), new
// connections see the new size (qemu-img info, nbdinfo), snapshots and their clones keep theirs,
// the size survives a restart, and shrinking is refused with clear codes (unconfirmed, attached,
// a longer snapshot) until it may go, freeing the space past the new end.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { requires } from '../helpers/requires.ts';
import { runCli, startServer, tempDir, type RunningServer } from '../helpers/server.ts';
import { patternBuf } from '../property/storage-model.ts';

const MiB = 1024 * 1024;

const cli = (...args: string[]) => runCli([...args, '--control', server.controlPath]);

function qemuImgSize(uri: string): number {
  const out = execFileSync('qemu-img', ['info', '--output=json', '-f', 'raw', uri], { encoding: 'utf8', timeout: 60_000 });
  return (JSON.parse(out) as { 'virtual-size': number })['virtual-size'];
}

function nbdinfoSize(uri: string): number {
  return Number(execFileSync('nbdinfo', ['--size', uri], { encoding: 'utf8', timeout: 60_000 }).trim());
}

const work = tempDir('snapnbd-resize-');
const dataDir = join(work, 'data');
let server: RunningServer;
let client: NbdTestClient | null = null;
const first = patternBuf(MiB, 11);

beforeAll(async () => {
  requires('qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy');
  server = await startServer({ dataDir, args: ['--volume', 'vm1=16M'] });
});

afterAll(async () => {
  client?.destroy();
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('volume resize', () => {
  it('grows while a client is attached: it keeps its size and works; new connections see the new size', async () => {
    client = await NbdTestClient.connect(server.port, 'vm1');
    expect(client.size).toBe(16 * MiB);
    await client.write(0, first);
    await client.flush();
    expect((await cli('snapshot', 'create', 'vm1@before')).code).toBe(0);

    const r = await cli('volume', 'resize', 'vm1', '48M');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('resized volume vm1 from 16 MiB to 48 MiB; its 1 connected client keeps the old size until it reconnects\n');

    // The attached connection: old size, still reading and writing (up to its old end).
    expect(client.size).toBe(16 * MiB);
    const tail = Buffer.alloc(64 * 1024, 0x5a);
    await client.write(16 * MiB - tail.length, tail);
    await client.flush();
    expect((await client.read(0, MiB)).equals(first)).toBe(true);
    expect((await client.read(16 * MiB - tail.length, tail.length)).equals(tail)).toBe(true);

    // New connections: the new size (NBD_OPT_INFO/GO).
    expect(qemuImgSize(server.uri('vm1'))).toBe(48 * MiB);
    expect(nbdinfoSize(server.uri('vm1'))).toBe(48 * MiB);
    const again = await NbdTestClient.connect(server.port, 'vm1');
    expect(again.size).toBe(48 * MiB);
    await again.disconnect();
    // The grown part: writable, and zeros until written.
    execFileSync('qemu-io', ['-f', 'raw', '-c', `read -P 0 ${40 * MiB} ${MiB}`, '-c', `write -P 0x33 ${47 * MiB} ${MiB}`,
      '-c', `read -P 0x33 ${47 * MiB} ${MiB}`, server.uri('vm1')], { stdio: 'pipe', timeout: 60_000 });

    // Snapshots and their clones keep the size they were taken at.
    expect(nbdinfoSize(server.uri('vm1@before'))).toBe(16 * MiB);
    expect((await cli('clone', 'vm1@before', 'old')).code).toBe(0);
    expect(nbdinfoSize(server.uri('old'))).toBe(16 * MiB);
    const info = JSON.parse((await cli('volume', 'info', 'vm1', '--json')).stdout) as { size: number };
    expect(info.size).toBe(48 * MiB);
    const snap = JSON.parse((await cli('snapshot', 'info', 'vm1@before', '--json')).stdout) as { size: number };
    expect(snap.size).toBe(16 * MiB);
  });

  it('keeps the size and the data across a restart', async () => {
    await client!.disconnect();
    client = null;
    expect(await server.stop()).toBe(0);
    server = await startServer({ dataDir });
    expect(nbdinfoSize(server.uri('vm1'))).toBe(48 * MiB);
    expect(nbdinfoSize(server.uri('vm1@before'))).toBe(16 * MiB);
    const out = join(work, 'vm1.raw');
    execFileSync('nbdcopy', [server.uri('vm1'), out], { stdio: 'pipe', timeout: 60_000 });
    const all = readFileSync(out);
    expect(all.length).toBe(48 * MiB);
    expect(all.subarray(0, MiB).equals(first)).toBe(true);
    expect(all.subarray(16 * MiB - 64 * 1024, 16 * MiB).equals(Buffer.alloc(64 * 1024, 0x5a))).toBe(true);
    expect(all.subarray(47 * MiB).equals(Buffer.alloc(MiB, 0x33))).toBe(true);
  });

  it('refuses a shrink without --shrink, while attached, and while a snapshot is longer; then shrinks and frees', async () => {
    let r = await cli('volume', 'resize', 'vm1', '8M');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('SHRINK_NOT_CONFIRMED');
    expect(r.stderr).toContain('--shrink');

    client = await NbdTestClient.connect(server.port, 'vm1');
    r = await cli('volume', 'resize', 'vm1', '8M', '--shrink');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('VOLUME_BUSY');
    expect(r.stderr).toContain('never shrunk while attached');
    expect(client.isOpen).toBe(true); // not disconnected by the refusal
    await client.disconnect();
    client = null;

    r = await cli('volume', 'resize', 'vm1', '8M', '--shrink');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('VOLUME_HAS_SNAPSHOTS');
    expect(r.stderr).toContain('before');
    expect(r.stderr).toContain('old (from vm1@before)');
    expect(nbdinfoSize(server.uri('vm1'))).toBe(48 * MiB); // nothing changed

    r = await cli('volume', 'resize', 'vm1', '8M', '--shrink', '--json');
    expect(r.stdout).toBe(''); // still refused: the snapshot is there
    expect((await cli('volume', 'delete', 'old')).code).toBe(0);
    expect((await cli('snapshot', 'delete', 'vm1@before')).code).toBe(0);
    const before = JSON.parse((await cli('stats', '--json')).stdout) as { store: { liveBytes: number } };
    r = await cli('volume', 'resize', 'vm1', '8M', '--shrink');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('resized volume vm1 from 48 MiB to 8 MiB\n');
    expect(nbdinfoSize(server.uri('vm1'))).toBe(8 * MiB);
    const after = JSON.parse((await cli('stats', '--json')).stdout) as { store: { liveBytes: number } };
    // The 1 MiB written at 47 MiB and the 64 KiB at 16 MiB are gone.
    expect(before.store.liveBytes - after.store.liveBytes).toBeGreaterThanOrEqual(MiB + 64 * 1024);
    execFileSync('qemu-io', ['-f', 'raw', '-c', `read -P 0 ${MiB} ${7 * MiB}`, server.uri('vm1')], { stdio: 'pipe', timeout: 60_000 });
    const out = join(work, 'vm1-small.raw');
    execFileSync('nbdcopy', [server.uri('vm1'), out], { stdio: 'pipe', timeout: 60_000 });
    expect(readFileSync(out).subarray(0, MiB).equals(first)).toBe(true);
  });

  it('refuses bad sizes and unknown volumes with usage errors or codes', async () => {
    let r = await cli('volume', 'resize', 'vm1', 'lots');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("'lots' is not a size");
    r = await cli('volume', 'resize', 'vm1', '1000');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('INVALID_ARGUMENT');
    r = await cli('volume', 'resize', 'nope', '1G');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('VOLUME_NOT_FOUND');
    r = await cli('volume', 'resize', 'vm1', '8M');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('volume vm1 is already 8 MiB\n');
  });
});
