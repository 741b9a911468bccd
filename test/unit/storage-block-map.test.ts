// The two-level shared map: copy-on-write at both levels, reference counts, checkValid after
// every mutation (the sorted-btree habit).
import { describe, expect, it } from 'vitest';
import { ENTRIES_PER_PAGE, NodeMap, UNMAPPED, ZERO, type SlotRefs } from '../../src/storage/block-map.ts';
import { PATCH_MAX } from '../../src/storage/map-page.ts';
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
    for (const p of pages) { const e = p!.view(); for (let i = 0; i < e.length; i += 2) if (e[i]! < ZERO) derived.set(e[i]!, (derived.get(e[i]!) ?? 0) + 1); }
    expect(new Map([...refs.m].sort())).toEqual(new Map([...derived].sort()));
  });

  // A page copied on write is a patch over the shared page (map-page.ts): a few entries, not 4 KiB.
  describe('patch pages', () => {
    const full = (refs: Refs, n = ENTRIES_PER_PAGE * 2): NodeMap => {
      const m = new NodeMap(n, refs);
      for (let c = 0; c < n; c++) m.set(c, c + 1, 1);
      return m;
    };

    it('a write after a snapshot patches the shared page; both read their own entries and births', () => {
      const refs = new Refs();
      const head = full(refs);
      const snap = head.share();
      head.set(3, 9000, 2);
      head.set(3, 9001, 3); // rewrite of a patched entry: still one patch entry
      head.set(4, UNMAPPED, 2);
      const page = head.l1.pages[0]!;
      expect(page.patched).toBe(true);
      expect(snap.l1.pages[0]!.patched).toBe(false);
      expect(snap.l1.pages[0]!.isBase).toBe(true);
      for (const m of [head, snap]) m.checkValid();
      expect([head.slot(3), head.birth(3), head.slot(4), head.birth(4), head.slot(5)]).toEqual([9001, 3, UNMAPPED, 0, 6]);
      expect([snap.slot(3), snap.birth(3), snap.slot(4), snap.birth(4)]).toEqual([4, 1, 5, 1]);
      expect(page.view()[6]).toBe(9001);
      expect(page.mapped).toBe(ENTRIES_PER_PAGE - 1);
      // The patch page holds every slot it maps (the base's ones too): the snapshot's page
      // counts once more, the rewritten slots once, the unmapped one only through the snapshot.
      expect([refs.count(6), refs.count(9001), refs.count(9000), refs.count(5)]).toEqual([2, 1, 0, 1]);
      expect(head.exclusive(3)).toBe(true);
      expect(head.exclusive(6)).toBe(false);
    });

    it('a patch page copied again patches the same base; past PATCH_MAX entries it is a full page', () => {
      const refs = new Refs();
      const head = full(refs);
      const s1 = head.share();
      head.set(0, 7000, 2);
      const s2 = head.share();
      head.set(1, 7001, 3);
      const p1 = s2.l1.pages[0]!;
      const p2 = head.l1.pages[0]!;
      expect(p2).not.toBe(p1);
      expect(p2.patched).toBe(true);
      expect(p2.view().slice(0, 4)).toEqual(new Uint32Array([7000, 2, 7001, 3]));
      expect(p1.view().slice(0, 4)).toEqual(new Uint32Array([7000, 2, 2, 1]));
      for (let c = 2; c < PATCH_MAX; c++) head.set(c, 8000 + c, 4);
      expect(head.l1.pages[0]!.patched).toBe(true);
      head.set(PATCH_MAX, 9999, 4);
      expect(head.l1.pages[0]!.patched).toBe(false);
      for (const m of [head, s1, s2]) m.checkValid();
      expect([head.slot(0), head.slot(1), head.slot(PATCH_MAX - 1), head.slot(PATCH_MAX), head.slot(PATCH_MAX + 1)]).toEqual([7000, 7001, 8000 + PATCH_MAX - 1, 9999, PATCH_MAX + 2]);
      expect([s1.slot(0), s1.slot(1), s2.slot(0), s2.slot(1)]).toEqual([1, 2, 7000, 2]);
    });

    it('a base held by one map alone is copied, not changed in place: its patch pages keep reading it', () => {
      const refs = new Refs();
      const a = full(refs);
      const b = a.share();
      a.set(10, 5000, 2); // a's page patches b's page; b holds that page alone now
      const base = b.l1.pages[0]!;
      expect(base.refs).toBe(1);
      b.set(11, 5001, 2);
      expect(b.l1.pages[0]).not.toBe(base);
      for (const m of [a, b]) m.checkValid();
      expect([a.slot(10), a.slot(11), b.slot(10), b.slot(11)]).toEqual([5000, 12, 11, 5001]);
      a.release();
      b.checkValid();
      b.release();
      expect(refs.m.size).toBe(0); // every reference given back exactly once
    });
  });
});
