// A real filesystem on an NBD export without the nbd kernel module: nbdfuse exposes the export as
// a file, losetup makes it a block device, mkfs.ext4 + mount + files + unmount; then a new
// nbdfuse session (so every byte went through the server), fsck, remount and checksums.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { PEER_KINDS, withPeers } from '../helpers/peers.ts';
import { tempDir } from '../helpers/server.ts';
import { mustRun, tool } from './tool.ts';

const READY_TIMEOUT_MS = 30_000;
const POLL_MS = 50;
/** File sizes written into the filesystem: tiny, odd, block-sized, and a few MiB. */
const FILE_SIZES = [1, 777, 4096, 65_537, 1_000_000, 4 * 2 ** 20, 12_345, 300_000];

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** One nbdfuse + loop device session; close() undoes everything that was set up, in order. */
async function attach(uri: string, fuseDir: string): Promise<{ loop: string; close(): Promise<void> }> {
  mkdirSync(fuseDir, { recursive: true });
  const disk = join(fuseDir, 'disk');
  const proc: ChildProcess = spawn('nbdfuse', [disk, uri], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let loop = '';
  const close = async (): Promise<void> => {
    if (loop) await tool('losetup', ['-d', loop]);
    await tool('fusermount3', ['-u', fuseDir]);
    const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await exited;
    }
    clearTimeout(t);
  };
  try {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!existsSync(disk)) {
      if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`nbdfuse did not come up: ${err}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    loop = (await mustRun('losetup', ['-f', '--show', disk])).stdout.trim();
    expect(loop).toMatch(/^\/dev\/loop\d+$/);
    return { loop, close };
  } catch (e) {
    await close();
    throw e;
  }
}

describe('nbdfuse + losetup + ext4', () => {
  it.each(PEER_KINDS)('makes a filesystem, writes files, remounts through a new session, checksums match (%s)', async (kind) => {
    requires('nbdfuse', 'losetup', 'mkfs.ext4', 'fusermount3', 'nbdkit');
    const dir = tempDir('snapnbd-fuse-');
    const fuseDir = join(dir, 'fuse');
    const mnt = join(dir, 'mnt');
    mkdirSync(mnt);
    const files = new Map<string, string>();
    try {
      await withPeers([kind], async (uri) => {
        // Session 1: make the filesystem and write files.
        let s = await attach(uri, fuseDir);
        let mounted = false;
        try {
          await mustRun('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', s.loop]);
          await mustRun('mount', [s.loop, mnt]);
          mounted = true;
          mkdirSync(join(mnt, 'sub', 'deeper'), { recursive: true });
          FILE_SIZES.forEach((size, i) => {
            const rel = i % 2 ? `sub/deeper/f${i}.bin` : `f${i}.bin`;
            const data = randomBytes(size);
            writeFileSync(join(mnt, rel), data);
            files.set(rel, sha256(data));
          });
          await mustRun('umount', [mnt]);
          mounted = false;
        } finally {
          if (mounted) await tool('umount', ['-l', mnt]);
          await s.close();
        }

        // Session 2: a fresh connection sees a clean filesystem with the same files.
        s = await attach(uri, fuseDir);
        try {
          const fsck = await tool('e2fsck', ['-f', '-n', s.loop]);
          expect(fsck.code, `${fsck.stdout}${fsck.stderr}`).toBe(0);
          await mustRun('mount', [s.loop, mnt]);
          mounted = true;
          for (const [rel, sum] of files) expect(sha256(readFileSync(join(mnt, rel))), rel).toBe(sum);
          await mustRun('umount', [mnt]);
          mounted = false;
        } finally {
          if (mounted) await tool('umount', ['-l', mnt]);
          await s.close();
        }
      }, { size: '128M' });
      expect(files.size).toBe(FILE_SIZES.length);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
