// `written` (space.ts NodeSpace.bornAfter) keeps its last answer until the node's births change:
// a listing of 500 snapshots reads 500 kept answers instead of walking every birth epoch of each.
// A kept answer must never outlive a change: a write to the head, a snapshot taken (the new
// node's births are a copy), a delete that changes which epoch "written" counts from.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeSpace } from '../../src/storage/space.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { spaceOf, walkSpace } from '../../src/storage/accounting.ts';

/** bornAfter without any kept answer. */
function naive(sp: NodeSpace, epoch: number): number {
  let n = 0;
  for (const [b, k] of sp.births) if (b > epoch) n += k;
  return n;
}

describe('NodeSpace.bornAfter', () => {
  it('answers as the walk does, asked again after each change', () => {
    const sp = new NodeSpace();
    sp.add(1, 5);
    sp.add(3, 2);
    expect(sp.bornAfter(1)).toBe(2);
    expect(sp.bornAfter(1)).toBe(2); // kept
    sp.add(4, 7); // a birth after epoch 1: the kept answer is stale
    expect(sp.bornAfter(1)).toBe(naive(sp, 1));
    expect(sp.bornAfter(1)).toBe(9);
    sp.add(3, -2); // an overwrite frees the epoch-3 slots
    expect(sp.bornAfter(1)).toBe(7);
    expect(sp.bornAfter(0)).toBe(12); // another epoch: not the kept one
    expect(sp.bornAfter(4)).toBe(0);
  });

  it('a copy (snapshot, clone, rollback) answers from its own births', () => {
    const a = new NodeSpace();
    a.add(2, 4);
    const b = new NodeSpace();
    b.add(5, 1);
    expect(b.bornAfter(1)).toBe(1);
    b.copyShared(a);
    expect(b.bornAfter(1)).toBe(4);
    a.add(6, 3); // the source moves on; the copy does not
    expect(a.bornAfter(1)).toBe(7);
    expect(b.bornAfter(1)).toBe(4);
  });
});

describe('listing with kept answers', () => {
  const CHUNK = 65536;
  const CHUNKS = 256;
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapnbd-space-memo-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('written stays equal to a walk of the maps across writes, creates and deletes', async () => {
    const s = await openCowStore(dir, { commitIntervalMs: 0 });
    s.autoCompact = false;
    try {
      await s.createVolume({ name: 'v', size: CHUNKS * CHUNK, chunkSize: CHUNK });
      const dev = s.head('v');
      const buf = Buffer.alloc(CHUNK, 7);
      const expectWalk = (when: string): void => {
        s.listSnapshots('v'); // asks every snapshot: answers are kept from here
        s.volumeInfo('v');
        for (const n of s.inspect().nodes) expect(spaceOf(n), `${when}: ${n.vol.name}@${n.name}`).toEqual(walkSpace(n));
      };
      for (let i = 0; i < 6; i++) {
        for (let k = 0; k < 8; k++) await dev.write(((i * 37 + k * 11) % CHUNKS) * CHUNK, buf, { fua: false });
        expectWalk(`before s${i}`);
        await s.createSnapshot('v', `s${i}`);
        expectWalk(`after s${i}`);
      }
      await s.deleteSnapshot('v', 's2'); // s3 now counts from s1's epoch
      expectWalk('after deleting s2');
      await s.deleteSnapshot('v', 's0'); // s1 counts from the start
      expectWalk('after deleting s0');
      await dev.write(0, buf, { fua: false });
      expectWalk('after a head write');
    } finally {
      await s.close();
    }
  });
});
