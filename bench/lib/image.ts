// The one raw image every peer serves: incompressible, never-repeating content (a random MiB
// with a per-4-KiB counter stamped in), so that no layer can win by compression, zero detection
// or deduplication.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, writeSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const BLOCK = 2 ** 20;
const STAMP_EVERY = 4096;

export function createImage(path: string, bytes: number): void {
  const base = randomBytes(BLOCK);
  const buf = Buffer.allocUnsafe(BLOCK);
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < bytes; off += BLOCK) {
      base.copy(buf);
      for (let i = 0; i < BLOCK; i += STAMP_EVERY) buf.writeDoubleLE(off + i, i);
      writeSync(fd, buf, 0, Math.min(BLOCK, bytes - off), off);
    }
  } finally {
    closeSync(fd);
  }
}

/** Bytes allocated on disk under a directory (st_blocks, so holes do not count). */
export function allocatedBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) total += allocatedBytes(p);
    else if (e.isFile()) total += statSync(p).blocks * 512;
  }
  return total;
}
