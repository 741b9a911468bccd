// Shared by the partial-slot tests (storage-partial, storage-partial-backing, storage-chains): a
// store on a simulated file system with the compactor manual, seeded data patterns, and what the
// tests count (partial slots, segment reads, space counters against a walk of the maps).
import { expect } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import type { SimFileIo } from '../../src/storage/sim-file-io.ts';
import { spaceOf, walkSpace } from '../../src/storage/accounting.ts';
import type { HoldFileIo } from './hold-file-io.ts';

const KiB = 1024;

/** `len` bytes of a pattern that differs per seed and per 4-byte word. */
export function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len + 3);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503)) >>> 0, i);
  return b.subarray(0, len);
}

/** Store '/s': commits only when asked, 1 MiB segments, no background compaction. */
export async function openStore(io: HoldFileIo | SimFileIo, journalCompactBytes?: number): Promise<CowStore> {
  const s = await openCowStore('/s', { fileIo: io, commitIntervalMs: 0, segmentBytes: 1024 * KiB, ...(journalCompactBytes ? { journalCompactBytes } : {}) });
  s.autoCompact = false;
  return s;
}

export function partialCount(s: CowStore): number {
  let n = 0;
  for (const cls of s.inspect().classes) n += cls.partials.size;
  return n;
}

/** Reads of files whose name ends with `suffix` so far (segment files: '.dat'). */
export function readsOf(io: HoldFileIo, suffix = '.dat'): number {
  let n = 0;
  for (const [p, k] of io.reads) if (p.endsWith(suffix)) n += k;
  return n;
}

/** The first `size` bytes of volume 'v' (its head, or snapshot `snap`). */
export async function readVolume(s: CowStore, size: number, snap?: string): Promise<Buffer> {
  const b = Buffer.alloc(size);
  await (snap ? s.snapshotView('v', snap) : s.head('v')).read(0, size, b);
  return b;
}

/** The space counters of every node equal a walk of its map. */
export function countersMatch(s: CowStore): void {
  const nodes = s.inspect().nodes;
  expect(nodes.map((n) => [n.kind, n.name, spaceOf(n)])).toEqual(nodes.map((n) => [n.kind, n.name, walkSpace(n)]));
}
