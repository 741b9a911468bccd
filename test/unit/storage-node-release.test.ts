// A big snapshot delete lets go of the snapshot's map in slices (node-release.ts): the event loop
// runs other work meanwhile (a timer fires, writes to the head complete), and the result is the
// one of the unsliced walk: the space counters equal a walk of the maps (accounting.ts
// walkSpace), and the slot counts equal those a reopen derives from the maps.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { spaceOf, walkSpace } from '../../src/storage/accounting.ts';

const CHUNK = 65536;
/** 2^20 chunks (64 GiB, mapped at the engine level, no data): a walk of many slices. */
const CHUNKS = 1 << 20;
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-release-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function open(d: string): Promise<CowStore> {
  const s = await openCowStore(d, { commitIntervalMs: 0 });
  s.autoCompact = false;
  return s;
}

/** Volume 'v' with every chunk mapped, reopened so its counters come from the maps. */
async function fullVolume(d: string): Promise<CowStore> {
  const s = await open(d);
  await s.createVolume({ name: 'v', size: CHUNKS * CHUNK, chunkSize: CHUNK });
  const st = s.inspect();
  const cls = st.chunkClass(CHUNK);
  const head = st.volume('v')!.head;
  for (let c = 0; c < CHUNKS; c++) head.map.set(c, cls.alloc(), 1);
  await s.checkpoint();
  await s.close();
  return open(d);
}

function expectCounters(s: CowStore, when: string): void {
  for (const n of s.inspect().nodes) expect(spaceOf(n), `${when}: ${n.vol.name}@${n.name}`).toEqual(walkSpace(n));
}

function slotCounts(s: CowStore): number[] {
  const cls = s.inspect().chunkClass(CHUNK);
  const out: number[] = [];
  for (let slot = 0; slot < CHUNKS + 1024; slot++) out.push(cls.count(slot));
  return out;
}

/** Deletes `name` while a timer writes and trims chunks all over the head; returns how many rounds ran during it. */
async function deleteWithWrites(s: CowStore, name: string): Promise<number> {
  const dev = s.head('v');
  let deleting = true;
  let during = 0;
  const writes: Promise<void>[] = [];
  const timer = setInterval(() => {
    if (!deleting) return;
    // Spread over the volume, last pages first: indices the walk has not reached yet.
    for (const c of [CHUNKS - 1 - during * 977, (during * 7919) % CHUNKS]) {
      writes.push(dev.write(c * CHUNK, Buffer.alloc(CHUNK, 0x40 + (during % 64)), { fua: false }));
    }
    // A trim too: it drops a slot without adding one.
    writes.push(dev.trim((CHUNKS - 2 - during * 1031) * CHUNK, CHUNK, { fua: false }));
    during++;
  }, 0);
  try {
    await s.deleteSnapshot('v', name);
  } finally {
    deleting = false;
    clearInterval(timer);
  }
  await Promise.all(writes);
  return during;
}

describe('a big snapshot delete, sliced', () => {
  it('the snapshot alone holds its pages (the head trimmed): slots freed in slices, writes run meanwhile', async () => {
    const d = join(dir, 's');
    const s = await fullVolume(d);
    await s.createSnapshot('v', 'a');
    const dev = s.head('v');
    await dev.trim(0, CHUNKS * CHUNK, { fua: false });
    expectCounters(s, 'before');
    const during = await deleteWithWrites(s, 'a');
    expect(during).toBeGreaterThan(0); // the timer fired while the delete ran: it yielded
    expectCounters(s, 'after');
    const counts = slotCounts(s);
    await s.close();
    const r = await open(d);
    expect(slotCounts(r)).toEqual(counts);
    expectCounters(r, 'reopened');
    await r.close();
  }, 120_000);

  it('the head shares the whole map (no write since): it gains every slot, writes at indices not walked yet', async () => {
    const d = join(dir, 's');
    const s = await fullVolume(d);
    await s.createSnapshot('v', 'old');
    await s.head('v').write(0, Buffer.alloc(CHUNK, 1), { fua: false }); // old holds chunk 0's first slot alone
    await s.createSnapshot('v', 'a');
    await s.deleteSnapshot('v', 'old');
    // Now 'a' and the head share one L1: deleting 'a' hands every slot to the head.
    const during = await deleteWithWrites(s, 'a');
    expect(during).toBeGreaterThan(0);
    expectCounters(s, 'after');
    const head = spaceOf(s.inspect().volume('v')!.head);
    expect(head.used).toBe(head.referenced); // the head is the only node left: all of it its own
    expect(head.used).toBeGreaterThan(CHUNKS * CHUNK * 0.9);
    const counts = slotCounts(s);
    await s.close();
    const r = await open(d);
    expect(slotCounts(r)).toEqual(counts);
    expectCounters(r, 'reopened');
    await r.close();
  }, 120_000);
});
