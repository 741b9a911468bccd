// The compactor's decisions, on plain data (README.md "Compactor"): which segments one pass
// empties (`planPass`), and how the switch rewrites map entries from old slots to their copies
// (`remapEntries`). Pure: compactor.ts gathers the inputs, does the I/O and applies the result.

/**
 * Data compaction: a segment is emptied when at most this share of its slots is in use (copying
 * out its live chunks costs at most half a segment)...
 */
export const COMPACT_LIVE_RATIO_MAX = 0.5;
/**
 * ...and when at least this share of its slots are free holes below its last used slot (the
 * bytes the pass gives back: a short, dense tail segment is not worth copying).
 */
export const COMPACT_WASTE_RATIO_MIN = 0.25;
/**
 * Live bytes one pass copies at most (one default segment): a pass is one control operation
 * (snapshot create waits for it) and writes one checkpoint, so it empties several segments.
 */
export const COMPACT_PASS_BYTES = 64 * 1024 * 1024;
/**
 * A pass must give back at least the bytes of the checkpoint it writes (a 1 TiB volume's maps
 * make a checkpoint of ~128 MiB), except that a checkpoint up to this size costs little more
 * than any commit's syncs.
 */
export const COMPACT_CHEAP_CHECKPOINT_BYTES = 1024 * 1024;

/** One chunk class's segments as the planner sees them. */
export interface ClassUsage {
  readonly chunkSize: number;
  readonly slotsPerSeg: number;
  readonly segmentCount: number;
  /** Slots in use in segment `seg`. */
  use(seg: number): number;
  /** Slots from the segment's start to its last used slot, inclusive (0 when empty). */
  usedSlots(seg: number): number;
  /** Being deleted or already being evacuated: neither a victim nor a target. */
  blocked(seg: number): boolean;
}

/**
 * The segments of one class a pass empties. A candidate is at most COMPACT_LIVE_RATIO_MAX in
 * use and has at least COMPACT_WASTE_RATIO_MIN of its slots as free holes below its last used
 * slot. Most holes first (ties: the highest segment), as many as COMPACT_PASS_BYTES of live
 * chunks, each victim's live chunks (with those of lower victims) fitting in the free slots of
 * lower non-victim segments: data only moves down, so passes never undo each other. A pass is
 * worth it only if it gives back at least the checkpoint it writes (COMPACT_CHEAP_CHECKPOINT_BYTES).
 * The class whose pass gives back the most wins. Victims are in ascending order.
 */
export function planPass<C extends ClassUsage>(classes: Iterable<C>, checkpointLen: number): { usage: C; segs: number[] } | null {
  let best: { usage: C; segs: number[]; bytes: number } | null = null;
  for (const usage of classes) {
    const perSeg = usage.slotsPerSeg;
    const nSegs = usage.segmentCount;
    const freeBelow = new Float64Array(nSegs + 1); // free slots in usable segments below each one
    const candidates: { seg: number; use: number; waste: number }[] = [];
    for (let seg = 0; seg < nSegs; seg++) {
      const use = usage.use(seg);
      const blocked = usage.blocked(seg);
      freeBelow[seg + 1] = (freeBelow[seg] as number) + (blocked ? 0 : perSeg - use);
      if (blocked || use === 0 || use > perSeg * COMPACT_LIVE_RATIO_MAX) continue;
      const waste = usage.usedSlots(seg) - use;
      if (waste >= perSeg * COMPACT_WASTE_RATIO_MIN) candidates.push({ seg, use, waste });
    }
    candidates.sort((x, y) => y.waste - x.waste || y.seg - x.seg);
    const budget = Math.max(perSeg, Math.floor(COMPACT_PASS_BYTES / usage.chunkSize));
    // Chosen victims in segment order, each with its slack: the free slots of non-victims below
    // it minus the live chunks of it and of the victims below it (all copied below it). Adding
    // a victim c below v takes c's free slots out of v's and adds c's chunks: v loses perSeg.
    const chosen: number[] = [];
    const slack: number[] = [];
    let live = 0;
    let waste = 0;
    for (const c of candidates) {
      if (live + c.use > budget) continue;
      let at = 0;
      while (at < chosen.length && (chosen[at] as number) < c.seg) at++;
      const own = (freeBelow[c.seg] as number) - perSeg * at - c.use;
      let fits = own >= 0;
      for (let i = at; i < slack.length && fits; i++) fits = (slack[i] as number) >= perSeg;
      if (!fits) continue;
      for (let i = at; i < slack.length; i++) slack[i] = (slack[i] as number) - perSeg;
      chosen.splice(at, 0, c.seg);
      slack.splice(at, 0, own);
      live += c.use;
      waste += c.waste;
      if (live >= budget) break;
    }
    const bytes = waste * usage.chunkSize;
    const worth = bytes >= checkpointLen || checkpointLen <= COMPACT_CHEAP_CHECKPOINT_BYTES;
    if (chosen.length > 0 && worth && (!best || bytes > best.bytes)) best = { usage, segs: chosen, bytes };
  }
  return best && { usage: best.usage, segs: best.segs };
}

/** No copy for this slot (an entry in `moveTo` arrays). */
export const NO_COPY = 0xffffffff;

/**
 * The switch: every entry of `pages` (slot, birth pairs) naming a slot of a victim in `moveTo`
 * (victim segment -> its slots' copies, NO_COPY for none) is rewritten in place to the copy;
 * births stay. `moved(from, to)` is called per rewritten entry (the slot counts move with it).
 * Returns the count rewritten and the victims with an entry that had no copy.
 */
export function remapEntries(pages: Iterable<Uint32Array>, moveTo: Map<number, Uint32Array>, slotsPerSeg: number,
  moved: (from: number, to: number) => void): { remapped: number; missed: Set<number> } {
  let lo = Infinity;
  let hi = -1;
  for (const v of moveTo.keys()) {
    lo = Math.min(lo, v * slotsPerSeg);
    hi = Math.max(hi, (v + 1) * slotsPerSeg);
  }
  let remapped = 0;
  const missed = new Set<number>();
  for (const e of pages) {
    for (let i = 0; i < e.length; i += 2) {
      const x = e[i] as number;
      if (x < lo || x >= hi) continue;
      const v = Math.floor(x / slotsPerSeg);
      const to = moveTo.get(v);
      if (!to) continue;
      const y = to[x - v * slotsPerSeg] as number;
      if (y === NO_COPY) {
        missed.add(v);
        continue;
      }
      e[i] = y;
      moved(x, y);
      remapped++;
    }
  }
  return { remapped, missed };
}
