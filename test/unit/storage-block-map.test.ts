// The two-level shared map: copy-on-write at both levels, reference counts, checkValid after
// every mutation (the sorted-btree habit).
import { describe, expect, it } from 'vitest';
import { ENTRIES_PER_PAGE, NodeMap, UNMAPPED, ZERO, type SlotRefs } from '../../src/storage/block-map.ts';
import { prng } from '../../src/storage/sim-file-io.ts';

class Refs implements SlotRefs {
  readonly m = new Map<number, number>();
  freed: number[] = [];
  ref(s: number): void { this.m.set(s, (this.m.get(s) ?? 0) + 1); }
  unref(s: number): void {
    const n = (this.m.get(s) ?? 0) - 1;
    if (n < 0) throw new Error('below zero');
    if (n === 0) { this.m.delete(s); this.freed.push(s); } else this.m.set(s, n);
  }
  count(s: number): number { return this.m.get(s) ?? 0; }
}

describe('NodeMap', () => {
  it('share() is O(1) and later writes copy only the touched page', () => {
    const refs = new Refs();
    const head = new NodeMap(ENTRIES_PER_PAGE * 4, refs);
    for (let c = 0; c < ENTRIES_PER_PAGE * 4; c += 7) head.set(c, c, 1);
    head.checkValid();
    const snap = head.share();
    expect(snap.l1).toBe(head.l1);
    expect(head.exclusive(0)).toBe(false);
    head.set(0, 100000, 2);
    head.checkValid();
    snap.checkValid();
    expect(head.l1).not.toBe(snap.l1);
    expect(head.l1.pages[0]).not.toBe(snap.l1.pages[0]);
    expect(head.l1.pages[1]).toBe(snap.l1.pages[1]); // untouched page still shared
    expect(snap.slot(0)).toBe(0);
    expect(head.slot(0)).toBe(100000);
    // A slot in a still-shared page is not exclusive even though one page holds it.
    expect(head.exclusive(ENTRIES_PER_PAGE + 1 + 6)).toBe(false);
    expect(head.exclusive(0)).toBe(true);
  });

  it('release frees exactly the slots nobody else holds', () => {
    const refs = new Refs();
    const head = new NodeMap(2000, refs);
    head.set(1, 11, 1);
    head.set(600, 12, 1);
    const snap = head.share();
    head.set(1, 13, 2);
    expect(refs.freed).toEqual([]);
    snap.release();
    expect(refs.freed).toEqual([11]);
    head.checkValid();
    head.release();
    expect(refs.freed.sort()).toEqual([11, 12, 13]);
  });

  it('assign (rollback) shares the other map and drops the old content', () => {
    const refs = new Refs();
    const head = new NodeMap(1000, refs);
    head.set(5, 1, 1);
    const snap = head.share();
    head.set(5, 2, 2);
    head.set(6, ZERO, 2);
    head.assign(snap);
    head.checkValid();
    expect(head.slot(5)).toBe(1);
    expect(head.slot(6)).toBe(UNMAPPED);
    expect(refs.freed).toEqual([2]);
  });

  it('pages that become empty are dropped', () => {
    const refs = new Refs();
    const m = new NodeMap(3000, refs);
    m.set(700, 1, 1);
    expect(m.l1.pages[1]).not.toBeNull();
    m.set(700, UNMAPPED, 1);
    m.checkValid();
    expect(m.l1.pages[1]).toBeNull();
  });

  it('random operations against a plain array model keep the structure valid', () => {
    const rand = prng(99);
    const refs = new Refs();
    const n = ENTRIES_PER_PAGE * 3 + 17;
    const maps: { map: NodeMap; model: number[] }[] = [{ map: new NodeMap(n, refs), model: new Array<number>(n).fill(UNMAPPED) }];
    let slot = 0;
    for (let i = 0; i < 3000; i++) {
      const r = rand();
      const t = maps[Math.floor(rand() * maps.length)]!;
      if (r < 0.7) {
        const c = Math.floor(rand() * n);
        const v = rand() < 0.1 ? UNMAPPED : rand() < 0.1 ? ZERO : slot++;
        t.map.set(c, v, 1);
        t.model[c] = v;
      } else if (r < 0.8 && maps.length < 20) maps.push({ map: t.map.share(), model: [...t.model] });
      else if (r < 0.85 && maps.length > 1) {
        t.map.release();
        maps.splice(maps.indexOf(t), 1);
      }
      for (const x of maps) x.map.checkValid();
    }
    for (const x of maps) for (let c = 0; c < n; c++) expect(x.map.slot(c)).toBe(x.model[c]);
    // Reference counts equal the number of distinct pages holding each slot.
    const derived = new Map<number, number>();
    const pages = new Set(maps.flatMap((x) => x.map.l1.pages.filter((p) => p !== null)));
    for (const p of pages) for (let i = 0; i < p!.entries.length; i += 2) if (p!.entries[i]! < ZERO) derived.set(p!.entries[i]!, (derived.get(p!.entries[i]!) ?? 0) + 1);
    expect(new Map([...refs.m].sort())).toEqual(new Map([...derived].sort()));
  });
});
