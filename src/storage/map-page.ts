// One leaf page of a chunk map (block-map.ts): ENTRIES_PER_PAGE entries of [slot, birth].
//
// A page copied on write (a node writes a page it shares with a snapshot) is a *patch page*: it
// reads its base's entries except the few it changed, kept in a small patch. The copy a snapshot
// forces costs ~100 bytes instead of 4 KiB: after 100 snapshots of scattered writes at 1 TiB,
// 16 k copies were 62 MiB of the process (bench/README.md, "Patch pages"). A patch page becomes a
// full page again (materializes) when its patch would pass PATCH_MAX, and when a caller needs its
// entries as one array to change in place (the compactor's remap, a decode).
//
// Rule that keeps a patch page right: a page that is some patch page's base never changes in
// place again (`isBase`; NodeMap.set copies it instead), so the base's entries are the patch
// page's forever. A base is always a full page (a copy of a patch page patches the same base).
// Slot references are unchanged by this: a patch page holds a reference on every slot it maps,
// base's included, exactly as the full copy did; the base is kept alive by the JS reference only.

export const ENTRIES_PER_PAGE = 512;
export const UNMAPPED = 0xffffffff;
/** Entries a patch page may hold before it becomes a full page (12 bytes each: index, slot, birth). */
export const PATCH_MAX = 8;

/** The newest Freeze.seq handed out (process-wide: a page made now is done for every freeze so far). */
let freezeSeq = 0;

/** A new checkpoint freeze's sequence number (block-map.ts Freeze). */
export function nextFreezeSeq(): number {
  return ++freezeSeq;
}

const NO_PATCH = new Uint32Array(0);
/** A patch page's `full`. */
const NOT_FULL = new Uint32Array(0);

export class Page {
  /**
   * A full page's [slot0, birth0, slot1, birth1, ...]; NOT_FULL (empty) for a patch page. Never
   * null, so the field keeps one type for the lookups (at()).
   */
  private full: Uint32Array;
  /** A patch page's base (a full page that never changes in place again). */
  private base: Page | null = null;
  /**
   * A patch page's [index, slot, birth, ...]: the entries that differ from its base, the first
   * `patchLen` triples used (its capacity doubles: a page's first writes do not each allocate).
   */
  private patch: Uint32Array = NO_PATCH;
  private patchLen = 0;
  /** Some patch page reads this page's entries: they never change in place again. */
  isBase = false;
  refs = 1;
  /** Entries that are not UNMAPPED. */
  mapped = 0;
  /**
   * The newest checkpoint (Freeze.seq) that needs nothing more of this page: it encoded or kept
   * it, or the page was made after that checkpoint's instant (checkpoint.ts).
   */
  doneSeq = freezeSeq;
  /** Its entries at the instant of the checkpoint `doneSeq`, once they changed after it (else null). */
  kept: Uint32Array | null = null;

  /** An empty page (every entry UNMAPPED, birth 0); copyOf passes NOT_FULL. */
  constructor(full: Uint32Array = emptyEntries()) {
    this.full = full;
  }

  /** A page to change in place of `src` (shared): a patch over src's base, src's entries. */
  static copyOf(src: Page): Page {
    const p = new Page(NOT_FULL);
    if (src.full !== NOT_FULL) {
      p.base = src;
      src.isBase = true;
    } else {
      p.base = src.base;
      p.patch = src.patchLen > 0 ? src.patch.slice(0, src.patchLen * 3) : NO_PATCH;
      p.patchLen = src.patchLen;
    }
    p.mapped = src.mapped;
    return p;
  }

  /** True for a patch page (tests, checkValid). */
  get patched(): boolean {
    return this.full === NOT_FULL;
  }

  /** Entry value at `i` of the [slot, birth] layout (i = 2 × index for the slot, + 1 for the birth). */
  at(i: number): number {
    const f = this.full;
    return f !== NOT_FULL ? (f[i] as number) : this.patchedAt(i);
  }

  /** at() of a patch page (apart, so that at() stays small enough to inline). */
  private patchedAt(i: number): number {
    const k = i >>> 1;
    const p = this.patch;
    const end = this.patchLen * 3;
    for (let j = 0; j < end; j += 3) if (p[j] === k) return p[j + 1 + (i & 1)] as number;
    return this.base!.full[i] as number;
  }

  /**
   * Its entries as one array, to read only: a full page's own, or a fresh copy made from a
   * patch page (never kept by it). Changing the array changes a full page, so: read only.
   */
  view(): Uint32Array {
    return this.full !== NOT_FULL ? this.full : this.materialized();
  }

  /** A copy of its entries (a checkpoint's kept instant). */
  copyEntries(): Uint32Array {
    return this.full !== NOT_FULL ? this.full.slice() : this.materialized();
  }

  /**
   * Its entries as one array to change in place (becoming a full page first). The caller checked
   * that the page may change in place (not a base, or every holder meant to see the change).
   */
  mutable(): Uint32Array {
    if (this.full === NOT_FULL) {
      this.full = this.materialized();
      this.base = null;
      this.patch = NO_PATCH;
      this.patchLen = 0;
    }
    return this.full;
  }

  /** Sets entry `k` (0 ≤ k < ENTRIES_PER_PAGE); the caller keeps `mapped` and the slot references. */
  put(k: number, slot: number, birth: number): void {
    if (this.isBase) throw new Error('a patch page\'s base changed in place');
    if (this.full === NOT_FULL) {
      let p = this.patch;
      const end = this.patchLen * 3;
      for (let j = 0; j < end; j += 3) {
        if (p[j] === k) {
          p[j + 1] = slot;
          p[j + 2] = birth;
          return;
        }
      }
      if (this.patchLen < PATCH_MAX) {
        if (end === p.length) {
          const q = new Uint32Array(Math.max(3, p.length * 2));
          q.set(p);
          this.patch = p = q;
        }
        p[end] = k;
        p[end + 1] = slot;
        p[end + 2] = birth;
        this.patchLen++;
        return;
      }
    }
    const e = this.mutable();
    e[k * 2] = slot;
    e[k * 2 + 1] = birth;
  }

  /**
   * Makes this full page a patch over `q` (or q's base) when they differ in at most PATCH_MAX
   * entries (open: patchSimilarPages). False, and unchanged, otherwise or when it is a base.
   */
  patchOver(q: Page): boolean {
    const e = this.full;
    const base = q.full !== NOT_FULL ? q : q.base!;
    if (e === NOT_FULL || this.isBase || base === this) return false;
    const b = base.full;
    const diff: number[] = [];
    for (let i = 0; i < e.length; i += 2) {
      if (e[i] === b[i] && e[i + 1] === b[i + 1]) continue;
      if (diff.length === PATCH_MAX * 3) return false;
      diff.push(i >>> 1, e[i] as number, e[i + 1] as number);
    }
    this.full = NOT_FULL;
    this.base = base;
    this.patch = diff.length > 0 ? new Uint32Array(diff) : NO_PATCH;
    this.patchLen = diff.length / 3;
    base.isBase = true;
    return true;
  }

  /** Patch page invariants (block-map.ts checkValid). Throws on the first violation. */
  checkPatch(): void {
    if (this.full !== NOT_FULL) return;
    const b = this.base;
    if (!b || b.full === NOT_FULL || !b.isBase) throw new Error('patch page without a full base');
    const p = this.patch;
    const end = this.patchLen * 3;
    if (p.length % 3 !== 0 || end > p.length || this.patchLen > PATCH_MAX) throw new Error(`patch of ${this.patchLen} entries in ${p.length / 3}`);
    const seen = new Set<number>();
    for (let j = 0; j < end; j += 3) {
      const k = p[j] as number;
      if (k >= ENTRIES_PER_PAGE || seen.has(k)) throw new Error(`patch entry ${k} out of range or repeated`);
      seen.add(k);
    }
  }

  private materialized(): Uint32Array {
    const e = this.base!.full.slice();
    const p = this.patch;
    const end = this.patchLen * 3;
    for (let j = 0; j < end; j += 3) {
      const at = (p[j] as number) * 2;
      e[at] = p[j + 1] as number;
      e[at + 1] = p[j + 2] as number;
    }
    return e;
  }
}

function emptyEntries(): Uint32Array {
  const e = new Uint32Array(ENTRIES_PER_PAGE * 2).fill(UNMAPPED);
  for (let i = 1; i < e.length; i += 2) e[i] = 0;
  return e;
}
