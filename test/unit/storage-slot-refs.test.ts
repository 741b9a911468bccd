// Slot reference counts are one byte per slot (chunk-store.ts): counts from REFS_BIG up live in
// a side map. A slot held by more pages than a byte counts keeps its exact count both ways.
import { describe, expect, it } from 'vitest';
import { ENTRIES_PER_PAGE, NodeMap } from '../../src/storage/block-map.ts';
import { DataStore, REFS_BIG } from '../../src/storage/chunk-store.ts';
import { SimFileIo } from '../../src/storage/sim-file-io.ts';

const CHUNK = 65536;

function chunkClass() {
  return new DataStore(new SimFileIo(), '/d', 1 << 20).classOf(CHUNK);
}

describe('slot reference counts', () => {
  it('count past a byte and back down exactly, freeing at zero only', () => {
    const cls = chunkClass();
    const n = REFS_BIG * 2 + 3;
    for (let i = 1; i <= n; i++) {
      cls.ref(7);
      expect(cls.count(7)).toBe(i);
    }
    expect(cls.count(8)).toBe(0);
    for (let i = n - 1; i >= 0; i--) {
      cls.unref(7);
      expect(cls.count(7)).toBe(i);
      expect(cls.pendingFree.includes(7)).toBe(i === 0);
    }
    expect(() => cls.unref(7)).toThrow(/below zero/);
  });

  it('a page copied by 300 snapshots holds its slots 301 times; releasing all frees them once', () => {
    const cls = chunkClass();
    const head = new NodeMap(ENTRIES_PER_PAGE, cls);
    for (let c = 0; c < ENTRIES_PER_PAGE; c++) head.set(c, c, 1);
    const snaps: NodeMap[] = [];
    for (let i = 0; i < 300; i++) {
      snaps.push(head.share());
      head.set(0, ENTRIES_PER_PAGE + i, i + 2); // every snapshot keeps its own page 0
    }
    expect(cls.count(100)).toBe(301);
    expect(cls.count(0)).toBe(1); // only the first page maps chunk 0's first slot
    head.checkValid();
    for (const s of snaps) s.release();
    expect(cls.count(100)).toBe(1);
    head.release();
    expect(cls.count(100)).toBe(0);
    expect(new Set(cls.pendingFree).size).toBe(cls.pendingFree.length);
    expect(cls.pendingFree.length).toBe(ENTRIES_PER_PAGE + 300);
  });
});
