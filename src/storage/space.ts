// Space counters per node (README.md "Diff and accounting"): kept up to date when entries are
// born and freed, as ZFS keeps its space figures, so that listing 500 snapshots of a 1 TiB volume
// reads counters instead of walking maps. It owns each node's `NodeSpace`; the catalog calls it
// for share/rollback/drop and the data path for every map entry it sets.
//
// The figures (in chunks; accounting.ts multiplies by the chunk size):
// - `births`: mapped slots (not ZERO/UNMAPPED) by birth epoch. referenced = all of them; written
//   since the previous snapshot = those born after its epoch.
// - `unique`: slots this node alone holds (no other node of any volume maps them): what deleting
//   it frees. A slot's holders are the nodes whose L1 holds a page holding it, so it is held by
//   exactly one node when its holders (chunk-store.ts `holders`: the slot count less the holds of
//   partial slots on their base), its page's count and that L1's count are all 1.
//
// When a node stops holding a slot (overwritten, trimmed, its node dropped or rolled back), the
// slot may be left with one holder, which gains it; the candidate holders are the nodes of the
// chunk class, searched at the slot's chunk (own volume's newest snapshot first). When a map is
// shared (snapshot, clone, rollback), both sides' unique slots become shared: both drop to 0.
//
// Not persisted: `rebuild` derives them at open from the maps in one pass over distinct pages.
import { ENTRIES_PER_PAGE, isSlot, type L1, type Page } from './block-map.ts';
import type { ChunkClass } from './chunk-store.ts';

/** What the counters need of a node (catalog.ts `Node`). */
export interface SpaceNode {
  readonly map: { l1: L1; slot(c: number): number; birth(c: number): number; set(c: number, slot: number, birth: number): void };
  readonly space: NodeSpace;
}

export class NodeSpace {
  /** Mapped slots by birth epoch. */
  births = new Map<number, number>();
  /** Sum of `births`. */
  slots = 0;
  /** Slots no other node holds. */
  unique = 0;
  /**
   * `bornAfter`'s last answer, valid while `births` is this same map, unchanged: a snapshot's
   * births never change, so listing 500 snapshots reads 500 of these instead of walking ~250
   * epochs each (8 ms of one turn of the event loop at 500 snapshots; bench/README.md).
   */
  private memoBirths: Map<number, number> | null = null;
  private memoEpoch = 0;
  private memoCount = 0;

  add(birth: number, n: number): void {
    this.memoBirths = null;
    const v = (this.births.get(birth) ?? 0) + n;
    if (v === 0) this.births.delete(birth);
    else this.births.set(birth, v);
    this.slots += n;
  }

  /** Slots born after `epoch`. */
  bornAfter(epoch: number): number {
    if (this.memoBirths === this.births && this.memoEpoch === epoch) return this.memoCount;
    let n = 0;
    for (const [b, k] of this.births) if (b > epoch) n += k;
    this.memoBirths = this.births;
    this.memoEpoch = epoch;
    this.memoCount = n;
    return n;
  }

  /** This node now shares everything `src` maps (and nothing else): a snapshot, clone or rollback. */
  copyShared(src: NodeSpace): void {
    this.births = new Map(src.births);
    this.slots = src.slots;
    this.unique = 0;
    src.unique = 0;
  }
}

/** The nodes that may hold a slot of a chunk class, most likely holders first. */
export type Candidates = () => Iterable<SpaceNode>;

/**
 * Sets chunk `c` of `node` and keeps every node's counters: the old slot leaves `node` (and may
 * become another node's alone), a new slot is `node`'s alone (a fresh slot in a page the write
 * made its own).
 */
export function setEntry(node: SpaceNode, cls: ChunkClass, candidates: Candidates, c: number, slot: number, birth: number, likely?: SpaceNode): void {
  const map = node.map;
  const old = map.slot(c);
  const oldBirth = map.birth(c);
  map.set(c, slot, birth);
  const sp = node.space;
  if (isSlot(old)) sp.add(oldBirth, -1);
  if (isSlot(slot)) sp.add(birth, 1);
  if (old === slot) return; // in place (a rebirth): the same holders
  if (isSlot(slot)) sp.unique++;
  if (isSlot(old)) {
    const n = cls.holders(old);
    if (n === 0) sp.unique--; // it was this node's alone
    else if (n === 1) gainIfAlone(candidates, c, old, likely);
  }
}

/**
 * Slot `s` at chunk `c` lies in one page now: its holder gains it if nobody else holds that page.
 * `likely`, tried first, is the node most likely to hold it (a head's newest snapshot, for the
 * head's first write to a chunk after it): the walk of every candidate is a generator, which
 * costs a first write after a snapshot more than the rest of its counters (bench/README.md, w8/fresh).
 */
export function gainIfAlone(candidates: Candidates, c: number, s: number, likely?: SpaceNode): void {
  const pi = Math.floor(c / ENTRIES_PER_PAGE);
  const at = (c % ENTRIES_PER_PAGE) * 2;
  if (likely !== undefined && gainIfHolder(likely, pi, at, s)) return;
  for (const m of candidates()) if (gainIfHolder(m, pi, at, s)) return;
}

/** Whether `m`'s page at `pi` holds slot `s` at entry `at` (then the one holder): if so, it gains the slot unless that page is shared. */
function gainIfHolder(m: SpaceNode, pi: number, at: number, s: number): boolean {
  const l1 = m.map.l1;
  const p = l1.pages[pi];
  if (!p || p.at(at) !== s) return false;
  if (p.refs === 1 && l1.refs === 1) m.space.unique++;
  return true;
}

/**
 * After a node let go of `l1` (dropped, or its head rolled back): every slot it held that now has
 * exactly one holder goes to that holder's `unique`. Per page: a page still held by one L1 of one
 * node gives that node its slots counted once; a freed page's slots are looked up per chunk.
 */
export function released(l1: L1, cls: ChunkClass, candidates: Candidates): void {
  if (l1.refs >= 2) return; // still held by two nodes or more: every slot in it keeps two holders
  const nodes = [...candidates()]; // once: scanned per page below
  const pages = l1.pages;
  for (let pi = 0; pi < pages.length; pi++) releasedPage(pages[pi] ?? null, pi, cls, nodes);
}

/**
 * `released` for the page at index `pi` of the L1 let go (the caller checked that L1's refs < 2).
 * Pages at different indices hold different slots (a slot stays at its chunk), so the pages of
 * one L1 may be done one at a time, in any order, between other changes (node-release.ts).
 */
export function releasedPage(p: Page | null, pi: number, cls: ChunkClass, nodes: readonly SpaceNode[]): void {
  if (!p || p.refs > 1) return;
  if (p.refs === 1) {
    const owner = ownerOf(nodes, pi, p);
    if (!owner) return;
    let n = 0;
    const e = p.view();
    for (let i = 0; i < e.length; i += 2) {
      const s = e[i] as number;
      if (isSlot(s) && cls.holders(s) === 1) n++;
    }
    owner.space.unique += n;
    return;
  }
  // Freed: the slots' remaining holders are pages at the same index held by one node alone.
  const alone: { page: Page; node: SpaceNode }[] = [];
  for (const m of nodes) {
    const q = m.map.l1.pages[pi];
    if (q && q.refs === 1 && m.map.l1.refs === 1) alone.push({ page: q, node: m });
  }
  if (alone.length === 0) return;
  const e = p.view();
  for (let i = 0; i < e.length; i += 2) {
    const s = e[i] as number;
    if (!isSlot(s) || cls.holders(s) !== 1) continue;
    for (const a of alone) {
      if (a.page.at(i) === s) {
        a.node.space.unique++;
        break;
      }
    }
  }
}

/** The node holding page `p` at index `pi`, when one L1 of one node holds it. */
function ownerOf(nodes: readonly SpaceNode[], pi: number, p: Page): SpaceNode | null {
  for (const m of nodes) {
    if (m.map.l1.pages[pi] === p) return m.map.l1.refs === 1 ? m : null;
  }
  return null;
}

/**
 * Derives every node's counters from the maps (open): each distinct page is read once, each
 * distinct L1 summed once. A page's births are kept as runs ([birth, count, ...]): entries of a
 * page are mostly born together, so this stays one pair per page.
 */
export function rebuild(nodes: Iterable<SpaceNode & { readonly vol: { readonly chunkClass: ChunkClass } }>): void {
  const perPage = new Map<Page, { births: number[]; alone: number }>();
  const perL1 = new Map<L1, { births: Map<number, number>; slots: number; alone: number }>();
  for (const node of nodes) {
    const l1 = node.map.l1;
    let sum = perL1.get(l1);
    if (!sum) {
      const cls = node.vol.chunkClass;
      sum = { births: new Map(), slots: 0, alone: 0 };
      for (const p of l1.pages) {
        if (!p) continue;
        let pg = perPage.get(p);
        if (!pg) {
          pg = { births: [], alone: 0 };
          const e = p.view();
          let b0 = -1;
          let k = 0;
          for (let i = 0; i < e.length; i += 2) {
            const s = e[i] as number;
            if (!isSlot(s)) continue;
            const b = e[i + 1] as number;
            if (b !== b0) {
              if (k > 0) pg.births.push(b0, k);
              b0 = b;
              k = 0;
            }
            k++;
            if (cls.holders(s) === 1) pg.alone++;
          }
          if (k > 0) pg.births.push(b0, k);
          perPage.set(p, pg);
        }
        const runs = pg.births;
        for (let i = 0; i < runs.length; i += 2) {
          const b = runs[i] as number;
          const k = runs[i + 1] as number;
          sum.births.set(b, (sum.births.get(b) ?? 0) + k);
          sum.slots += k;
        }
        if (p.refs === 1) sum.alone += pg.alone;
      }
      perL1.set(l1, sum);
    }
    const sp = node.space;
    sp.births = new Map(sum.births);
    sp.slots = sum.slots;
    sp.unique = l1.refs === 1 ? sum.alone : 0;
  }
}
