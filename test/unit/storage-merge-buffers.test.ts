// Merge buffers (src/storage/merge-buffers.ts): the whole-chunk buffers of partial first writes are
// reused once their write landed. Reuse must never let one write's chunk carry another's bytes:
// concurrent unaligned first writes to every chunk after a snapshot, twice (the second round takes
// the first round's buffers), read back equal to a model in the head and the snapshots; and a merge
// that starts while another's chunk write is stopped does not get that write's buffer.
import { describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import { MergeBuffers, MERGE_BUFFERS_KEPT_BYTES } from '../../src/storage/merge-buffers.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';

const KiB = 1024;
const CHUNK = 64 * KiB;
const CHUNKS = 16;
const SIZE = CHUNK * CHUNKS;
/** Not a multiple of the 4 KiB block: such a first write merges its chunk (no partial slot). */
const UNALIGNED_OFF = 512;
const UNALIGNED_LEN = 1536;

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503)) >>> 0, i);
  return b;
}

describe('MergeBuffers', () => {
  it('hands back a given buffer of the same size, keeps sizes apart and keeps no more than its cap', () => {
    const m = new MergeBuffers();
    const a = m.take(CHUNK);
    expect(a.length).toBe(CHUNK);
    m.give(a);
    expect(m.take(2 * CHUNK)).not.toBe(a);
    expect(m.take(CHUNK)).toBe(a);
    expect(m.take(CHUNK)).not.toBe(a); // taken: not handed out twice
    const kept = MERGE_BUFFERS_KEPT_BYTES / CHUNK;
    const bufs = Array.from({ length: kept + 1 }, () => m.take(CHUNK));
    for (const b of bufs) m.give(b);
    const again = new Set(Array.from({ length: kept + 1 }, () => m.take(CHUNK)));
    expect(bufs.filter((b) => again.has(b)).length).toBe(kept);
  });
});

describe('merges through reused buffers', () => {
  it('concurrent unaligned first writes keep each chunk its own old content, round after round', async () => {
    const s = await openCowStore('/s', { fileIo: new SimFileIo(), commitIntervalMs: 0, segmentBytes: 1024 * KiB });
    s.autoCompact = false;
    try {
      await s.createVolume({ name: 'v', size: SIZE, chunkSize: CHUNK });
      const dev = s.head('v');
      const model = pattern(SIZE, 1);
      await dev.write(0, model, { fua: true });
      const snaps: { name: string; content: Buffer }[] = [];
      for (let round = 0; round < 3; round++) {
        // Shared with a snapshot: each write below goes to a fresh slot, merged with the old chunk.
        const name = `s${round}`;
        await s.createSnapshot('v', name);
        snaps.push({ name, content: Buffer.from(model) });
        const writes: Promise<void>[] = [];
        for (let c = 0; c < CHUNKS; c++) {
          const off = c * CHUNK + UNALIGNED_OFF + round * UNALIGNED_LEN;
          const data = pattern(UNALIGNED_LEN, 100 * round + c + 2);
          writes.push(dev.write(off, data, { fua: false }));
          data.copy(model, off);
        }
        await Promise.all(writes);
        const head = Buffer.alloc(SIZE);
        await dev.read(0, SIZE, head);
        for (let c = 0; c < CHUNKS; c++) {
          expect(head.subarray(c * CHUNK, (c + 1) * CHUNK).equals(model.subarray(c * CHUNK, (c + 1) * CHUNK)), `round ${round} chunk ${c}`).toBe(true);
        }
      }
      for (const snap of snaps) {
        const b = Buffer.alloc(SIZE);
        await s.snapshotView('v', snap.name).read(0, SIZE, b);
        expect(b.equals(snap.content), `snapshot ${snap.name}`).toBe(true);
      }
    } finally {
      await s.close();
    }
  });

  it('a merge made while another merged chunk is being written gets a buffer of its own', async () => {
    const io = new HoldFileIo(new SimFileIo());
    const s = await openCowStore('/s', { fileIo: io, commitIntervalMs: 0, segmentBytes: 1024 * KiB });
    s.autoCompact = false;
    try {
      await s.createVolume({ name: 'v', size: SIZE, chunkSize: CHUNK });
      const dev = s.head('v');
      const model = pattern(SIZE, 1);
      await dev.write(0, model, { fua: true });
      await s.createSnapshot('v', 'a');
      // A's merged chunk stops in its segment write; B merges chunk 1 meanwhile, then A goes on.
      const held = io.hold('.dat', 'write');
      const a = pattern(UNALIGNED_LEN, 2);
      const writeA = dev.write(UNALIGNED_OFF, a, { fua: false });
      a.copy(model, UNALIGNED_OFF);
      await held.reached;
      const b = pattern(UNALIGNED_LEN, 3);
      await dev.write(CHUNK + UNALIGNED_OFF, b, { fua: false });
      b.copy(model, CHUNK + UNALIGNED_OFF);
      held.release();
      await writeA;
      const head = Buffer.alloc(2 * CHUNK);
      await dev.read(0, 2 * CHUNK, head);
      expect(head.subarray(0, CHUNK).equals(model.subarray(0, CHUNK)), 'chunk 0 (the held write)').toBe(true);
      expect(head.subarray(CHUNK).equals(model.subarray(CHUNK, 2 * CHUNK)), 'chunk 1').toBe(true);
    } finally {
      await s.close();
    }
  });
});
