// Snapshot create and delete do not hold writes (write-gate.ts `redirect`): a write already in
// flight that redirects to a fresh slot does not delay a snapshot, a write going in place does
// (its chunk may be the snapshot's), and writes during a delete redirect instead of going in
// place into a slot the still-committed snapshot holds. Writes are stopped at their segment
// write by HoldFileIo, so nothing here depends on timing.
import { describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';

const CHUNK = 65536;
const MiB = 1024 * 1024;

async function store(): Promise<{ io: HoldFileIo; s: Awaited<ReturnType<typeof openCowStore>> }> {
  const io = new HoldFileIo(new SimFileIo());
  const s = await openCowStore('/s', { fileIo: io, commitIntervalMs: 0, segmentBytes: MiB });
  s.autoCompact = false;
  await s.createVolume({ name: 'v', size: 4 * MiB, chunkSize: CHUNK });
  await s.head('v').write(0, Buffer.alloc(4 * MiB, 1), { fua: true });
  return { io, s };
}

async function readAll(dev: { read(off: number, len: number, into: Buffer): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(4 * MiB);
  await dev.read(0, b.length, b);
  return b;
}

describe('snapshot create and delete do not hold writes', () => {
  it('a redirecting write in flight does not delay snapshot create; it lands after the snapshot', async () => {
    const { io, s } = await store();
    await s.createSnapshot('v', 'a'); // every chunk shared: the next write redirects
    const held = io.hold('.dat', 'write');
    let written = false;
    const w = s.head('v').write(0, Buffer.alloc(CHUNK, 2), { fua: false }).then(() => (written = true));
    await held.reached;
    await s.createSnapshot('v', 'b'); // would wait forever for the held write behind a barrier
    expect(written).toBe(false);
    held.release();
    await w;
    const b = await readAll(s.snapshotView('v', 'b'));
    expect(b.equals(Buffer.alloc(4 * MiB, 1))).toBe(true);
    const head = await readAll(s.head('v'));
    expect(head.subarray(0, CHUNK).equals(Buffer.alloc(CHUNK, 2))).toBe(true);
    await s.close();
  });

  it('an in-place write in flight is waited for: the snapshot holds it whole', async () => {
    const { io, s } = await store(); // no snapshot: the head's chunks are its own, writes go in place
    const held = io.hold('.dat', 'write');
    const w = s.head('v').write(0, Buffer.alloc(CHUNK, 3), { fua: false });
    await held.reached;
    let created = false;
    const c = s.createSnapshot('v', 'a').then(() => (created = true));
    // Writes are not held meanwhile: another chunk written now redirects and completes.
    await s.head('v').write(CHUNK, Buffer.alloc(CHUNK, 4), { fua: false });
    expect(created).toBe(false);
    // Not even taken yet (in memory): it would share a slot the held write is still changing.
    expect(s.listSnapshots('v')).toHaveLength(0);
    held.release();
    await w;
    await c;
    const a = await readAll(s.snapshotView('v', 'a'));
    expect(a.subarray(0, CHUNK).equals(Buffer.alloc(CHUNK, 3))).toBe(true);
    // The write that completed while the snapshot waited was answered before it was taken.
    expect(a.subarray(CHUNK, 2 * CHUNK).equals(Buffer.alloc(CHUNK, 4))).toBe(true);
    await s.close();
  });

  it('writes during a snapshot delete redirect instead of waiting for its commit', async () => {
    const { io, s } = await store();
    await s.createSnapshot('v', 'a');
    await s.head('v').write(0, Buffer.alloc(CHUNK, 5), { fua: true }); // the head's own chunk 0
    const slot0 = s.inspect().volume('v')!.head.map.slot(0);
    await s.createSnapshot('v', 'b'); // shares chunk 0's slot with the head
    const held = io.hold('.log', 'write'); // the delete's journal append
    const d = s.deleteSnapshot('v', 'b');
    await held.reached;
    // Chunk 0's slot is the head's alone in memory, but the committed store still has b on it.
    await s.head('v').write(0, Buffer.alloc(CHUNK, 6), { fua: false });
    expect(s.inspect().volume('v')!.head.map.slot(0)).not.toBe(slot0);
    held.release();
    await d;
    // Afterwards, in place again.
    const now = s.inspect().volume('v')!.head.map.slot(0);
    await s.head('v').write(0, Buffer.alloc(CHUNK, 7), { fua: false });
    expect(s.inspect().volume('v')!.head.map.slot(0)).toBe(now);
    const a = await readAll(s.snapshotView('v', 'a'));
    expect(a.equals(Buffer.alloc(4 * MiB, 1))).toBe(true);
    await s.close();
  });
});
