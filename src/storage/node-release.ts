// Letting go of a dropped node's map (a snapshot or volume delete) one page index at a time, in
// slices that yield the event loop (util/slice.ts): dropping a node whose pages are its own gives
// back every slot they hold and hands the space counters over (space.ts `releasedPage`), O(its
// mapped chunks): 16 M entries for a 1 TiB snapshot, far too long for one turn of the loop.
//
// Why slicing is sound: the node is gone from the catalog before the walk starts (no read or
// snapshot reaches it) and its delete record is queued before any slot is freed, so a commit that
// carries a free carries the delete too. Until its index is done, a page still holds its slots:
// writes meanwhile see them shared and redirect, which is always safe. What must not interleave is
// a map change at an index the walk has not done (the counters of that index would be derived
// from a mix of before and after): the catalog calls `page(pi)` first for every entry it sets
// (`Catalog.setEntry`), so that index is done before it changes. Indices are independent: a slot
// lives at one chunk index in every map of its class. Control operations run one at a time, so no
// share, rollback, resize or compaction pass changes maps meanwhile.
import { releasePage, type L1, type NodeMap, type SlotRefs } from './block-map.ts';
import type { ChunkClass } from './chunk-store.ts';
import { releasedPage, type SpaceNode } from './space.ts';
import { Slicer } from '../util/slice.ts';

/**
 * Page indices done between two looks at the clock: one. A freed page's hand-over may compare
 * its 512 entries with the pages of hundreds of snapshots at that index (space.ts), milliseconds
 * for one page, so sixteen at a time overshot the slice; a clock look costs far less than a page.
 */
const PAGES_PER_CLOCK_LOOK = 1;

export class NodeRelease {
  private readonly l1: L1;
  private readonly slots: SlotRefs;
  /** The L1 lost its last holder: its pages lose a reference each. */
  private readonly freePages: boolean;
  /** Counters to hand over (null: not counting, or the L1 is still held by two nodes or more). */
  private readonly counters: { cls: ChunkClass; nodes: readonly SpaceNode[] } | null;
  private readonly done: Uint8Array;
  private next = 0;
  /** Slices yielded so far (tests). */
  yields = 0;

  /** Drops the map's reference on its L1 now; the pages are let go by `run`, `runSync` or `page`. */
  constructor(map: NodeMap, counting: { cls: ChunkClass; nodes: () => Iterable<SpaceNode> } | null) {
    const l1 = map.l1;
    this.l1 = l1;
    this.slots = map.slots;
    this.freePages = --l1.refs === 0;
    this.counters = counting && l1.refs < 2 ? { cls: counting.cls, nodes: [...counting.nodes()] } : null;
    this.done = new Uint8Array(this.freePages || this.counters ? l1.pages.length : 0);
  }

  get finished(): boolean {
    return this.next >= this.done.length;
  }

  /** Index `pi` now, unless done: a map entry at that index is about to change. */
  page(pi: number): void {
    if (pi >= this.done.length || this.done[pi] === 1) return;
    this.done[pi] = 1;
    const p = this.l1.pages[pi] ?? null;
    if (!p) return;
    if (this.freePages) releasePage(p, this.slots);
    if (this.counters) releasedPage(p, pi, this.counters.cls, this.counters.nodes);
  }

  /** Every index, in one go (replay, where nothing else runs). */
  runSync(): void {
    for (; this.next < this.done.length; this.next++) this.page(this.next);
  }

  /** Every index, yielding the event loop every few ms. */
  async run(): Promise<void> {
    const slicer = new Slicer();
    while (this.next < this.done.length) {
      const end = Math.min(this.done.length, this.next + PAGES_PER_CLOCK_LOOK);
      for (; this.next < end; this.next++) this.page(this.next);
      if (this.next < this.done.length && slicer.due()) await slicer.yield();
    }
    this.yields = slicer.yields;
  }
}
