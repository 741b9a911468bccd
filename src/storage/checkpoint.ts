// The whole catalog as records (a checkpoint), frozen at one instant and encoded while it is
// written. The plan is made synchronously at the commit's swap: the small records (State,
// Volume, NodeCp) are encoded at once, the partial slots copied flat (encoded as the writer
// reaches them: 200 Ki SlotValid records took 330 ms to encode, one turn of the event loop, and
// chains of partial slots make that many), and every L1 and page the checkpoint will
// encode is frozen: each L1 is marked and given the plan's `Freeze`, which makes every page
// under it frozen without touching the pages (block-map.ts; the swap is O(nodes): marking each
// page was ~1 s of one turn at 1 TiB with 500 snapshots, bench/README.md). The pages themselves
// (most of a checkpoint: 128 MiB per TiB mapped) are encoded one by one as the writer asks for
// them (record-pieces.ts writes them in pieces), so no second copy of the maps is ever held. A
// write that changes a frozen page or L1 in the meantime first keeps its old content
// (block-map.ts `beforePageChange`), which the plan then encodes: the checkpoint is the state at
// the swap, exactly as if it had been encoded there. The extra memory is one page per page
// changed while the checkpoint is written.
import { ENTRIES_PER_PAGE, Freeze, type L1, type Page } from './block-map.ts';
import type { Catalog } from './catalog.ts';
import { nodeRecord } from './catalog.ts';
import type { DataStore } from './chunk-store.ts';
import { Rec, RECORD_HEADER_LEN } from './format.ts';
import { emptyBits } from './partial-slots.ts';
import { encodeL1, encodeNode, encodePage, encodeSlotValid, encodeState, encodeVolume } from './records.ts';

/** Words before a partial slot's bits in the plan's flat copy: slot, base, at. */
const PARTIAL_STRIDE = 3;

/** Bytes of a Page record: header, id, chunk size, the entries. */
export const PAGE_RECORD_BYTES = RECORD_HEADER_LEN + 8 + ENTRIES_PER_PAGE * 8;

/** One node of the plan: its NodeCp record, and its L1 when this node is the first to name it. */
interface PlanNode {
  record: Buffer;
  /** Set on the first node holding this L1: the L1 and its pages are encoded before the node. */
  l1: L1 | null;
  l1Id: number;
  chunkSize: number;
}

export class CheckpointPlan {
  private readonly head: Buffer[];
  private readonly nodes: PlanNode[] = [];
  /** Per chunk class: its partial slots at the swap, PARTIAL_STRIDE + bits words each (slot, base, at, bits). */
  private readonly partials: { chunkSize: number; words: number; flat: Uint32Array }[] = [];
  private readonly l1s: L1[] = [];
  /** Every page record is encoded here: no 4 KiB of garbage per page (128 MiB per TiB). */
  private readonly scratch = Buffer.allocUnsafe(PAGE_RECORD_BYTES);
  private released = false;
  private readonly freeze = new Freeze();
  /** An L1 record's (index, page id) pairs are gathered here (one per plan, grown to the longest L1). */
  private pairs = new Uint32Array(0);

  /** Synchronous: the checkpoint is the state at this call. */
  constructor(catalog: Catalog, chunks: DataStore) {
    this.head = [encodeState(catalog.epoch, catalog.nextId)];
    for (const v of catalog.volumes()) this.head.push(encodeVolume(v));
    const l1Ids = new Map<L1, number>();
    for (const n of catalog.allNodes()) {
      const l1 = n.map.l1;
      let l1Id = l1Ids.get(l1);
      const first = l1Id === undefined;
      if (l1Id === undefined) {
        l1Id = l1Ids.size + 1;
        l1Ids.set(l1, l1Id);
        this.l1s.push(l1);
        l1.frozen = true;
        l1.kept = null;
        l1.freeze = this.freeze;
      }
      this.nodes.push({ record: encodeNode(Rec.NodeCp, nodeRecord(n), l1Id), l1: first ? l1 : null, l1Id, chunkSize: n.vol.chunkSize });
    }
    // After the pages: a partial slot and its base are referenced by then. Copied, not
    // referenced: a write adds bits in place.
    for (const cls of chunks.classes.values()) {
      if (cls.partials.size === 0) continue;
      const words = emptyBits(cls.chunkSize).length;
      const stride = PARTIAL_STRIDE + words;
      const flat = new Uint32Array(cls.partials.size * stride);
      const freed = cls.freedButPinned(); // in no record's state: replay must not bring them back
      let o = 0;
      cls.partials.forEach((p, slot) => {
        if (freed.size > 0 && freed.has(slot)) return;
        flat[o] = slot;
        flat[o + 1] = p.base;
        flat[o + 2] = p.at;
        for (let w = 0; w < words; w++) flat[o + PARTIAL_STRIDE + w] = p.bits[w] as number;
        o += stride;
      });
      this.partials.push({ chunkSize: cls.chunkSize, words, flat: flat.subarray(0, o) });
    }
  }

  /**
   * The records in checkpoint order: State, Volume…, then per node its new pages and L1 (each
   * written once however many nodes share it) and its NodeCp, then SlotValid…. Once per plan.
   * A Page record is valid only until the next record is asked for (it lives in `scratch`).
   */
  *records(): Generator<Buffer> {
    yield* this.head;
    const pageIds = new Map<Page, number>();
    for (const n of this.nodes) {
      const l1 = n.l1;
      if (l1) {
        // Looked up afresh at each step: the L1 may change (and keep its old pages) while this
        // generator waits for a piece to be written.
        const len = (l1.kept ?? l1.pages).length;
        if (this.pairs.length < len * 2) this.pairs = new Uint32Array(len * 2);
        const pairs = this.pairs;
        let k = 0;
        for (let i = 0; i < len; i++) {
          const p = (l1.kept ?? l1.pages)[i];
          if (!p) continue;
          let pid = pageIds.get(p);
          if (pid === undefined) {
            pid = pageIds.size + 1;
            pageIds.set(p, pid);
            const kept = p.doneSeq === this.freeze.seq ? p.kept : null;
            const rec = encodePage(pid, n.chunkSize, kept ?? p.view(), this.scratch);
            p.doneSeq = Math.max(p.doneSeq, this.freeze.seq);
            if (kept) p.kept = null;
            yield rec;
          }
          pairs[k++] = i;
          pairs[k++] = pid;
        }
        const rec = encodeL1(n.l1Id, len, pairs.subarray(0, k));
        l1.frozen = false;
        l1.kept = null;
        yield rec;
      }
      yield n.record;
    }
    for (const { chunkSize, words, flat } of this.partials) {
      for (let o = 0; o < flat.length; o += PARTIAL_STRIDE + words) {
        yield encodeSlotValid(chunkSize, flat[o] as number, flat[o + 1] as number, flat.subarray(o + PARTIAL_STRIDE, o + PARTIAL_STRIDE + words), flat[o + 2] as number);
      }
    }
  }

  /** Ends the freeze of whatever was not encoded yet (after the write, whether it succeeded or not). */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.freeze.active = false;
    for (const p of this.freeze.keptPages) p.kept = null;
    this.freeze.keptPages.length = 0;
    for (const l1 of this.l1s) {
      l1.frozen = false;
      l1.kept = null;
    }
  }
}
