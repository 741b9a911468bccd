// Sub-chunk validity (README.md "Partial chunks"): the first write to a shared chunk after a
// snapshot goes to a fresh slot holding only the blocks it wrote, plus which VALID_BLOCK blocks
// of that slot are valid and the slot (the base) the other blocks are read from. So that write
// reads nothing: no 64 KiB read of the old chunk, no 64 KiB write, for a 4 KiB write.
//
// One table per chunk class (slots are shared only inside a class). A partial slot holds one
// reference on its base (like a map page does), so the base lives until the partial slot is
// completed (every block written, or merged) or freed. A base is never written in place (it is
// shared or held only by the partial slot). It may be partial itself: a write to a partial slot a
// snapshot shares makes a partial slot over it (a chain), so that write reads nothing either;
// reads follow the chain down, at most CHAIN_DEPTH_MAX partial slots deep.
// Persisted as `SlotValid` records (records.ts); replay rebuilds the table and its references.
// The base may also be the volume's backing file (BACKING_BASE): the first write into a chunk
// unmapped over it. Then the other blocks are read from the backing file at the chunk `at`
// records, there is no base slot, no reference and nothing to merge.
/** The validity unit: 4 KiB, the page and file-system block size clients write in. */
export const VALID_BLOCK = 4096;
const BITS = 32;
/**
 * Partial slots per class at most; past it a partial first write merges as before. Bounds the
 * table's memory (~130 bytes each) and its share of every checkpoint (~30 bytes each): 256 Ki
 * partial slots (chunk versions written into since their snapshot, chains counted link by link)
 * = ~32 MiB of memory and ~8 MiB of each checkpoint.
 */
export const PARTIAL_SLOTS_MAX = 262144;
/**
 * Partial slots in one chain at most (the slot itself included). A write to a chunk whose chain
 * is this deep merges it whole (a read, as before chains): bounds the reads one block may take to
 * find its data, and the recursion that follows a chain. One merge per this many snapshots of a
 * chunk rewritten between each.
 */
export const CHAIN_DEPTH_MAX = 16;
/** A partial slot's base when its missing blocks come from the backing file (never a slot number). */
export const BACKING_BASE = 0xfffffffc;

/** Whether a base is a slot (holding a reference), not the backing file. */
export function baseIsSlot(base: number): boolean {
  return base !== BACKING_BASE;
}

export interface PartialSlot {
  /** A slot of the same class (maybe partial: a chain); or BACKING_BASE. */
  base: number;
  /** BACKING_BASE: the chunk index whose bytes in the backing file the missing blocks are (else 0). */
  at: number;
  /** Bit b set = block b of the slot holds data; the rest come from the base. */
  bits: Uint32Array;
}

export function blocksOf(chunkSize: number): number {
  return chunkSize / VALID_BLOCK;
}

export function emptyBits(chunkSize: number): Uint32Array {
  return new Uint32Array(Math.ceil(blocksOf(chunkSize) / BITS));
}

/** Whether [inner, inner+len) of a chunk is made of whole validity blocks. */
export function blockAligned(inner: number, len: number): boolean {
  return inner % VALID_BLOCK === 0 && len % VALID_BLOCK === 0;
}

/** Sets the bits of the whole blocks [inner, inner+len); returns whether any bit was new. */
export function markValid(bits: Uint32Array, inner: number, len: number): boolean {
  let changed = false;
  for (let b = inner / VALID_BLOCK; b < (inner + len) / VALID_BLOCK; b++) {
    const w = b >>> 5;
    const m = 1 << (b & 31);
    if (((bits[w] as number) & m) === 0) {
      bits[w] = (bits[w] as number) | m;
      changed = true;
    }
  }
  return changed;
}

export function isValid(bits: Uint32Array, block: number): boolean {
  return (((bits[block >>> 5] as number) >>> (block & 31)) & 1) === 1;
}

export function allValid(bits: Uint32Array, chunkSize: number): boolean {
  const n = blocksOf(chunkSize);
  for (let b = 0; b < n; b++) if (!isValid(bits, b)) return false;
  return true;
}

/** Byte just past the last valid block (how far the slot's data reaches in its file). */
export function validEnd(bits: Uint32Array, chunkSize: number): number {
  for (let b = blocksOf(chunkSize) - 1; b >= 0; b--) if (isValid(bits, b)) return (b + 1) * VALID_BLOCK;
  return 0;
}

/**
 * Calls `fn(from, to, valid)` for maximal runs of [inner, inner+len) whose blocks are all valid
 * or all missing (byte offsets in the chunk).
 */
export function forEachRun(bits: Uint32Array, inner: number, len: number, fn: (from: number, to: number, valid: boolean) => void): void {
  const end = inner + len;
  let pos = inner;
  while (pos < end) {
    const valid = isValid(bits, Math.floor(pos / VALID_BLOCK));
    let to = (Math.floor(pos / VALID_BLOCK) + 1) * VALID_BLOCK;
    while (to < end && isValid(bits, to / VALID_BLOCK) === valid) to += VALID_BLOCK;
    if (to > end) to = end;
    fn(pos, to, valid);
    pos = to;
  }
}

/** What the table needs of its class: slot references. */
export interface BaseRefs {
  ref(slot: number): void;
  unref(slot: number): void;
}

/** The partial slots of one chunk class. */
export class PartialSlots {
  private readonly bySlot = new Map<number, PartialSlot>();
  /** Base slot -> how many partial slots hold it (the space counters leave these holds out). */
  private readonly baseHolds = new Map<number, number>();
  private readonly refs: BaseRefs;

  constructor(refs: BaseRefs) {
    this.refs = refs;
  }

  get size(): number {
    return this.bySlot.size;
  }

  /**
   * Partial slots in the chain from `slot` down (0: whole), stopping past CHAIN_DEPTH_MAX: a
   * corrupt store's cycle ends too.
   */
  depth(slot: number): number {
    let d = 0;
    for (let p = this.bySlot.get(slot); p && d <= CHAIN_DEPTH_MAX; p = baseIsSlot(p.base) ? this.bySlot.get(p.base) : undefined) d++;
    return d;
  }

  /** The first partial slot whose chain is deeper than CHAIN_DEPTH_MAX (or loops), if any. */
  tooDeep(): number | undefined {
    for (const s of this.bySlot.keys()) if (this.depth(s) > CHAIN_DEPTH_MAX) return s;
    return undefined;
  }

  /** References on `slot` that partial slots hold as their base. */
  holdsOn(slot: number): number {
    return this.baseHolds.get(slot) ?? 0;
  }

  private hold(base: number, d: number): void {
    const n = (this.baseHolds.get(base) ?? 0) + d;
    if (n === 0) this.baseHolds.delete(base);
    else this.baseHolds.set(base, n);
  }

  get(slot: number): PartialSlot | undefined {
    return this.bySlot.get(slot);
  }

  entries(): IterableIterator<[number, PartialSlot]> {
    return this.bySlot.entries();
  }

  /** `fn` on every partial slot, without an entry tuple each (a checkpoint's swap copies them all). */
  forEach(fn: (p: PartialSlot, slot: number) => void): void {
    this.bySlot.forEach(fn);
  }

  /** Makes `slot` partial over `base` (taking a reference on a base slot), or updates its bits. */
  set(slot: number, base: number, bits: Uint32Array, at = 0): void {
    const old = this.bySlot.get(slot);
    if (baseIsSlot(base)) {
      this.refs.ref(base);
      this.hold(base, 1);
    }
    this.bySlot.set(slot, { base, bits, at: baseIsSlot(base) ? 0 : at });
    if (old) this.release(old.base);
  }

  private release(base: number): void {
    if (!baseIsSlot(base)) return;
    this.hold(base, -1);
    this.refs.unref(base);
  }

  /** `slot` is whole again (completed, merged, or freed): its base loses the reference. */
  clear(slot: number): void {
    const p = this.bySlot.get(slot);
    if (!p) return;
    this.bySlot.delete(slot);
    this.release(p.base);
  }

  /** The compactor moved slots: partial slots and bases follow their copies (`to` maps old -> new); how many changed. */
  remap(to: (slot: number) => number): number {
    const moved: [number, PartialSlot][] = [];
    for (const [s, p] of this.bySlot) {
      const ns = to(s);
      if (ns === s && (!baseIsSlot(p.base) || to(p.base) === p.base)) continue;
      moved.push([s, p]);
    }
    for (const [s] of moved) this.bySlot.delete(s);
    for (const [s, p] of moved) {
      const nb = baseIsSlot(p.base) ? to(p.base) : p.base;
      if (nb !== p.base) {
        this.refs.ref(nb);
        this.hold(nb, 1);
        this.release(p.base);
      }
      this.bySlot.set(to(s), { base: nb, bits: p.bits, at: p.at });
    }
    return moved.length;
  }
}
