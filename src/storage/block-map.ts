// The two-level chunk map of one node (head, snapshot or clone head). An L1 array points at leaf
// pages of ENTRIES_PER_PAGE entries; both levels are reference counted and shared between nodes,
// and copied on the first write through a node that does not hold them alone (sorted-btree's
// clone(), dm-thin's shadowing). A snapshot is `share()`: O(1), no page is touched. A page
// copied on write is a patch over the shared one (map-page.ts): its few changed entries only.
//
// An entry is two u32s: slot (or UNMAPPED / ZERO / ZERO_ALLOCATED) and birth epoch. A page that becomes all
// UNMAPPED is dropped, so memory follows the pages in use, not the volume size.
//
// Slot reference counts count *pages* holding the slot (a page shared by 100 snapshots counts
// once); the owner (the chunk class) keeps them through SlotRefs.

import { ENTRIES_PER_PAGE, nextFreezeSeq, Page, UNMAPPED } from './map-page.ts';

export { ENTRIES_PER_PAGE, Page, UNMAPPED };
export const PAGE_SHIFT = 9;
export const ZERO = 0xfffffffe;
/**
 * Reads as zeros and is reported as allocated (not a hole): whole chunks zeroed with NO_HOLE.
 * Costs no data, like ZERO; a copy-on-write store cannot promise preallocation anyway.
 */
export const ZERO_ALLOCATED = 0xfffffffd;
/** Largest real slot number. */
export const SLOT_MAX = 0xfffffff0;

export function isSlot(v: number): boolean {
  return v <= SLOT_MAX;
}

export interface SlotRefs {
  ref(slot: number): void;
  unref(slot: number): void;
  count(slot: number): number;
}

export class L1 {
  /** Its length changes only while the L1 is not shared (NodeMap.resize copies a shared one). */
  readonly pages: (Page | null)[];
  refs = 1;
  /** A checkpoint being written has yet to encode this L1 (checkpoint.ts): keep its page array. */
  frozen = false;
  /** Its pages at the checkpoint's instant, once they changed after it (else null). */
  kept: (Page | null)[] | null = null;
  /**
   * The checkpoint whose instant may hold this L1's pages: set on every L1 at the swap and
   * inherited by copies, so a page reached through a later copy is still kept for it.
   */
  freeze: Freeze | null = null;
  constructor(n: number, src?: L1) {
    this.pages = src ? src.pages.slice() : new Array<Page | null>(n).fill(null);
    this.freeze = src?.freeze ?? null;
  }
}

/**
 * One checkpoint being written (checkpoint.ts). Freezing marks only the L1s (O(nodes)): a page
 * counts as frozen while its freeze is active and its `doneSeq` is older than the freeze, so the
 * swap never walks the pages (16 M marks, ~1 s of one turn, at 1 TiB with 500 snapshots).
 */
export class Freeze {
  readonly seq = nextFreezeSeq();
  active = true;
  /** Pages given a `kept` copy for this checkpoint: cleared at its end. */
  readonly keptPages: Page[] = [];
}

/**
 * Called before a page's entries change in place, with the L1 it is reached through (a page
 * changed in place has no other holder but the compactor's switch, which names each page's
 * L1): a checkpoint still writing it keeps its content as of the checkpoint's instant. Two
 * tests when no checkpoint runs.
 */
export function beforePageChange(p: Page, l1: L1): void {
  const f = l1.freeze;
  if (!f || !f.active || p.doneSeq >= f.seq) return;
  p.kept = p.copyEntries();
  p.doneSeq = f.seq;
  f.keptPages.push(p);
}

/** As beforePageChange, for an L1's page array. */
function beforeL1Change(l1: L1): void {
  if (!l1.frozen) return;
  l1.kept = l1.pages.slice();
  l1.frozen = false;
}

export class NodeMap {
  l1: L1;
  /** Changes only through resize(). */
  nChunks: number;
  readonly slots: SlotRefs;

  constructor(nChunks: number, slots: SlotRefs, l1?: L1) {
    this.nChunks = nChunks;
    this.slots = slots;
    this.l1 = l1 ?? new L1(Math.ceil(nChunks / ENTRIES_PER_PAGE));
  }

  /** Slot (or UNMAPPED/ZERO) of chunk `c`. */
  slot(c: number): number {
    const p = this.l1.pages[c >>> PAGE_SHIFT];
    return p ? p.at((c & (ENTRIES_PER_PAGE - 1)) * 2) : UNMAPPED;
  }

  birth(c: number): number {
    const p = this.l1.pages[c >>> PAGE_SHIFT];
    return p ? p.at((c & (ENTRIES_PER_PAGE - 1)) * 2 + 1) : 0;
  }

  /** True when a write to chunk `c` may overwrite its slot in place: nobody else can see it. */
  exclusive(c: number): boolean {
    if (this.l1.refs !== 1) return false;
    const p = this.l1.pages[c >>> PAGE_SHIFT];
    if (!p || p.refs !== 1) return false;
    const s = p.at((c & (ENTRIES_PER_PAGE - 1)) * 2);
    return isSlot(s) && this.slots.count(s) === 1;
  }

  /** A new map sharing everything with this one (a snapshot or clone). O(1). */
  share(): NodeMap {
    this.l1.refs++;
    return new NodeMap(this.nChunks, this.slots, this.l1);
  }

  /** Sets chunk `c` to `slot` (or UNMAPPED/ZERO) born in `birth`, copying shared levels first. */
  set(c: number, slot: number, birth: number): void {
    if (c < 0 || c >= this.nChunks) throw new RangeError(`chunk ${c} out of range 0..${this.nChunks}`);
    const pi = c >>> PAGE_SHIFT;
    let l1 = this.l1;
    let page = l1.pages[pi] ?? null;
    if (!page && slot === UNMAPPED) return;
    if (l1.refs > 1) l1 = this.unshareL1();
    if (!page) {
      beforeL1Change(l1);
      page = new Page();
      l1.pages[pi] = page;
    } else if (page.refs > 1 || page.isBase) {
      // Shared, or a patch page's base (never changed in place): a patch page over it takes
      // its place, holding every slot it maps (its own references, as a full copy would).
      const copy = Page.copyOf(page);
      const e = page.view();
      for (let i = 0; i < e.length; i += 2) {
        const s = e[i] as number;
        if (isSlot(s)) this.slots.ref(s);
      }
      beforeL1Change(l1);
      l1.pages[pi] = copy;
      releasePage(page, this.slots); // only a decrement while shared
      page = copy;
    }
    const k = c & (ENTRIES_PER_PAGE - 1);
    const old = page.at(k * 2);
    if (isSlot(slot)) this.slots.ref(slot);
    beforePageChange(page, l1);
    if (old === UNMAPPED && slot !== UNMAPPED) page.mapped++;
    else if (old !== UNMAPPED && slot === UNMAPPED) page.mapped--;
    page.put(k, slot, slot === UNMAPPED ? 0 : birth);
    if (isSlot(old)) this.slots.unref(old);
    if (page.mapped === 0) {
      beforeL1Change(l1);
      l1.pages[pi] = null;
      // The page is ours alone (copied above) and holds no slots now.
    }
  }

  private unshareL1(): L1 {
    const old = this.l1;
    const l1 = new L1(old.pages.length, old);
    for (const p of l1.pages) if (p) p.refs++;
    old.refs--;
    this.l1 = l1;
    return l1;
  }

  /**
   * Grows or cuts the map to `n` chunks (a volume resize; a rollback onto a smaller snapshot's
   * map). A shared L1 is copied first, so the nodes sharing it keep their length. Cutting
   * unmaps the chunks past the end (their slots lose this map's references) and drops the pages
   * past the end; growing adds unmapped chunks.
   */
  resize(n: number): void {
    if (n < this.nChunks) {
      // The part of the new last page past the end: entries go through set() (copy if shared).
      const pageEnd = Math.min(this.nChunks, Math.ceil(n / ENTRIES_PER_PAGE) * ENTRIES_PER_PAGE);
      for (let c = n; c < pageEnd; c++) this.set(c, UNMAPPED, 0);
    }
    const len = Math.ceil(n / ENTRIES_PER_PAGE);
    const old = this.l1;
    if (len !== old.pages.length) {
      if (old.refs > 1) {
        // Copy the part kept; the old L1 stays with its other holders, untouched.
        const l1 = new L1(len);
        l1.freeze = old.freeze; // its pages may be a checkpoint's (as a copy's)
        for (let i = 0; i < Math.min(len, old.pages.length); i++) {
          const p = old.pages[i] ?? null;
          if (p) p.refs++;
          l1.pages[i] = p;
        }
        old.refs--;
        this.l1 = l1;
      } else if (len > old.pages.length) {
        beforeL1Change(old);
        const from = old.pages.length;
        old.pages.length = len; // one allocation, not one push per page (a grow to 2^32 chunks)
        old.pages.fill(null, from);
      } else {
        beforeL1Change(old);
        for (const p of old.pages.splice(len)) if (p) releasePage(p, this.slots);
      }
    }
    this.nChunks = n;
  }

  /** Drops this node's references (delete). Slots nobody holds any more go through unref. */
  release(): void {
    releaseL1(this.l1, this.slots);
  }

  /** Replaces this map's content by sharing `other`'s (rollback). */
  assign(other: NodeMap): void {
    other.l1.refs++;
    const old = this.l1;
    this.l1 = other.l1;
    releaseL1(old, this.slots);
  }

  /** Mapped (non-UNMAPPED) entries, for accounting; calls fn for each. */
  forEachMapped(fn: (c: number, slot: number, birth: number, page: Page) => void): void {
    const pages = this.l1.pages;
    for (let pi = 0; pi < pages.length; pi++) {
      const p = pages[pi];
      if (!p) continue;
      const e = p.view();
      for (let i = 0; i < ENTRIES_PER_PAGE; i++) {
        const s = e[i * 2] as number;
        if (s !== UNMAPPED) fn(pi * ENTRIES_PER_PAGE + i, s, e[i * 2 + 1] as number, p);
      }
    }
  }

  /** Structural self-check (tests call it after mutations). Throws on the first violation. */
  checkValid(): void {
    const pages = this.l1.pages;
    if (pages.length !== Math.ceil(this.nChunks / ENTRIES_PER_PAGE)) throw new Error('L1 length mismatch');
    if (this.l1.refs < 1) throw new Error('L1 refs < 1');
    for (let pi = 0; pi < pages.length; pi++) {
      const p = pages[pi];
      if (!p) continue;
      if (p.refs < 1) throw new Error(`page ${pi} refs < 1`);
      p.checkPatch();
      const e = p.view();
      let mapped = 0;
      for (let i = 0; i < ENTRIES_PER_PAGE; i++) {
        const s = e[i * 2] as number;
        if (s === UNMAPPED) {
          if (e[i * 2 + 1] !== 0) throw new Error(`unmapped entry ${pi}:${i} has a birth`);
          continue;
        }
        mapped++;
        if (pi * ENTRIES_PER_PAGE + i >= this.nChunks) throw new Error(`entry past the end at ${pi}:${i}`);
        if (isSlot(s) && this.slots.count(s) < 1) throw new Error(`slot ${s} mapped with refcount 0`);
        if (!isSlot(s) && s !== ZERO && s !== ZERO_ALLOCATED) throw new Error(`bad slot value ${s}`);
      }
      if (mapped !== p.mapped) throw new Error(`page ${pi} mapped count ${p.mapped} != ${mapped}`);
      if (mapped === 0) throw new Error(`empty page ${pi} kept`);
    }
  }
}

/**
 * After open: each page of `maps[m]` that differs from the page at the same index of
 * `maps[m - 1]` in at most PATCH_MAX entries becomes a patch over it, as the copy on write made
 * it before the restart (the checkpoint stores whole pages). `maps` are the nodes of one volume
 * in the order they forked (snapshots oldest first, the head last). Returns the pages patched.
 */
export function patchSimilarPages(maps: readonly NodeMap[]): number {
  let n = 0;
  for (let m = 1; m < maps.length; m++) {
    const a = maps[m - 1]!.l1.pages;
    const b = maps[m]!.l1.pages;
    if (a === b) continue;
    const len = Math.min(a.length, b.length);
    for (let i = 0; i < len; i++) {
      const p = b[i];
      const q = a[i];
      if (p && q && p !== q && p.patchOver(q)) n++;
    }
  }
  return n;
}

export function releaseL1(l1: L1, slots: SlotRefs): void {
  if (--l1.refs > 0) return;
  for (const p of l1.pages) if (p) releasePage(p, slots);
}

/** Drops one L1's reference to a page; the last one gives back the page's slots. */
export function releasePage(p: Page, slots: SlotRefs): void {
  if (--p.refs > 0) return;
  const e = p.view();
  for (let i = 0; i < e.length; i += 2) {
    const s = e[i] as number;
    if (isSlot(s)) slots.unref(s);
  }
}
