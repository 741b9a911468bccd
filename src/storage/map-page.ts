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
export const PATCH_MAX = 32;

/** The newest Freeze.seq handed out (process-wide: a page made now is done for every freeze so far). */
let freezeSeq = 0;

/** A new checkpoint freeze's sequence number (block-map.ts Freeze). */
export function nextFreezeSeq(): number {
  return ++freezeSeq;
}

const NO_PATCH = new Uint32Array(0);

export class Page {
  /** A full page's [slot0, birth0, slot1, birth1, ...]; null for a patch page. */
  private full: Uint32Array | null;
  /** A patch page's base (a full page that never changes in place again). */
  private base: Page | null = null;
  /** A patch page's [index, slot, birth, ...]: the entries that differ from its base. */
  private patch: Uint32Array = NO_PATCH;
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

  /** An empty page (every entry UNMAPPED, birth 0); copyOf passes null. */
  constructor(full: Uint32Array | null = emptyEntries()) {
    this.full = full;
  }

  /** A page to change in place of `src` (shared): a patch over src's base, src's entries. */
  static copyOf(src: Page): Page {
    const p = new Page(null);
    if (src.full) {
      p.base = src;
      src.isBase = true;
    } else {
      p.base = src.base;
      p.patch = src.patch.length > 0 ? src.patch.slice() : NO_PATCH;
    }
    p.mapped = src.mapped;
    return p;
  }

  /** True for a patch page (tests, checkValid). */
  get patched(): boolean {
    return this.full === null;
  }

  /** Entry value at `i` of the [slot, birth] layout (i = 2 × index for the slot, + 1 for the birth). */
  at(i: number): number {
    const f = this.full;
    if (f !== null) return f[i] as number;
    const k = i >>> 1;
    const p = this.patch;
    for (let j = 0; j < p.length; j += 3) if (p[j] === k) return p[j + 1 + (i & 1)] as number;
    return this.base!.full![i] as number;
  }

  /**
   * Its entries as one array, to read only: a full page's own, or a fresh copy made from a
   * patch page (never kept by it). Changing the array changes a full page, so: read only.
   */
  view(): Uint32Array {
    return this.full ?? this.materialized();
  }

  /** A copy of its entries (a checkpoint's kept instant). */
  copyEntries(): Uint32Array {
    return this.full ? this.full.slice() : this.materialized();
  }

  /**
   * Its entries as one array to change in place (becoming a full page first). The caller checked
   * that the page may change in place (not a base, or every holder meant to see the change).
   */
  mutable(): Uint32Array {
    if (this.full === null) {
      this.full = this.materialized();
      this.base = null;
      this.patch = NO_PATCH;
    }
    return this.full;
  }

  /** Sets entry `k` (0 ≤ k < ENTRIES_PER_PAGE); the caller keeps `mapped` and the slot references. */
  put(k: number, slot: number, birth: number): void {
    if (this.isBase) throw new Error('a patch page\'s base changed in place');
    if (this.full === null) {
      const p = this.patch;
      for (let j = 0; j < p.length; j += 3) {
        if (p[j] === k) {
          p[j + 1] = slot;
          p[j + 2] = birth;
          return;
        }
      }
      if (p.length < PATCH_MAX * 3) {
        const q = new Uint32Array(p.length + 3);
        q.set(p);
        q[p.length] = k;
        q[p.length + 1] = slot;
        q[p.length + 2] = birth;
        this.patch = q;
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
    const base = q.full ? q : q.base!;
    if (e === null || this.isBase || base === this) return false;
    const b = base.full!;
    const diff: number[] = [];
    for (let i = 0; i < e.length; i += 2) {
      if (e[i] === b[i] && e[i + 1] === b[i + 1]) continue;
      if (diff.length === PATCH_MAX * 3) return false;
      diff.push(i >>> 1, e[i] as number, e[i + 1] as number);
    }
    this.full = null;
    this.base = base;
    this.patch = diff.length > 0 ? new Uint32Array(diff) : NO_PATCH;
    base.isBase = true;
    return true;
  }

  /** Patch page invariants (block-map.ts checkValid). Throws on the first violation. */
  checkPatch(): void {
    if (this.full !== null) return;
    const b = this.base;
    if (!b || !b.full || !b.isBase) throw new Error('patch page without a full base');
    const p = this.patch;
    if (p.length % 3 !== 0 || p.length > PATCH_MAX * 3) throw new Error(`patch of ${p.length / 3} entries`);
    const seen = new Set<number>();
    for (let j = 0; j < p.length; j += 3) {
      const k = p[j] as number;
      if (k >= ENTRIES_PER_PAGE || seen.has(k)) throw new Error(`patch entry ${k} out of range or repeated`);
      seen.add(k);
    }
  }

  private materialized(): Uint32Array {
    const e = this.base!.full!.slice();
    const p = this.patch;
    for (let j = 0; j < p.length; j += 3) {
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
