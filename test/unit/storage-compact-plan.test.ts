// The compactor's planner on plain data: which segments a pass empties (live ratio, waste ratio,
// most holes first, data only moves down, the budget, the checkpoint's worth, the best class),
// and the switch's rewriting of map entries.
import { describe, expect, it } from 'vitest';
import {
  COMPACT_CHEAP_CHECKPOINT_BYTES, COMPACT_PASS_BYTES, NO_COPY, planPass, remapEntries, type ClassUsage,
} from '../../src/storage/compact-plan.ts';

const PER_SEG = 16;

/** A class whose segment i has use[i] live slots, its last used slot at usedSlots[i]. */
function usage(use: number[], usedSlots: number[], opts: { chunkSize?: number; blocked?: number[]; perSeg?: number } = {}): ClassUsage {
  const blocked = new Set(opts.blocked ?? []);
  return {
    chunkSize: opts.chunkSize ?? 65536, slotsPerSeg: opts.perSeg ?? PER_SEG, segmentCount: use.length,
    use: (s) => use[s] ?? 0, usedSlots: (s) => usedSlots[s] ?? 0, blocked: (s) => blocked.has(s),
  };
}

describe('planPass', () => {
  it('picks sparse segments with holes whose chunks fit in free slots below', () => {
    // seg 0 full, seg 1 half free at its end (no holes below its last slot: not worth it),
    // seg 2 and 3: 4 live slots spread to the end (12 holes each).
    const c = usage([16, 8, 4, 4], [16, 8, 16, 16]);
    expect(planPass([c], 0)?.segs).toEqual([2, 3]);
  });

  it('refuses a segment more than half live or with too few holes', () => {
    expect(planPass([usage([0, 9], [0, 16])], 0)).toBeNull(); // 9 > 16 * 0.5 live
    expect(planPass([usage([0, 8], [0, 11])], 0)).toBeNull(); // 3 holes < 16 * 0.25
    expect(planPass([usage([0, 8], [0, 12])], 0)?.segs).toEqual([1]); // 4 holes: enough
  });

  it('moves data only down: a victim needs room in lower non-victim segments', () => {
    // seg 0 has 1 free slot; seg 1 has 4 live chunks: no room below.
    expect(planPass([usage([15, 4], [16, 16])], 0)).toBeNull();
    // Two victims with 4 chunks each need 8 free below the upper one: seg 0 has 6 free, seg 1 is
    // a victim too (its chunks go below as well), so only the one with most holes fits.
    const c = usage([10, 4, 4], [16, 16, 16]);
    expect(planPass([c], 0)?.segs).toEqual([2]); // ties in holes go to the highest segment
  });

  it('skips blocked segments as victims and as targets', () => {
    expect(planPass([usage([0, 4, 4], [0, 16, 16], { blocked: [1] })], 0)?.segs).toEqual([2]);
    expect(planPass([usage([16, 4], [16, 16], { blocked: [0] })], 0)).toBeNull();
  });

  it('stops at COMPACT_PASS_BYTES of live chunks', () => {
    const perSeg = 4096;
    const chunkSize = 4096; // budget: COMPACT_PASS_BYTES / 4096 = 16384 chunks = 8 victims of 2048 live
    const n = 12;
    // Four empty segments at the bottom: room for every victim, so only the budget limits.
    const use = [0, 0, 0, 0, ...new Array<number>(n).fill(perSeg / 2)];
    const used = [0, 0, 0, 0, ...new Array<number>(n).fill(perSeg)];
    const plan = planPass([usage(use, used, { chunkSize, perSeg })], 0)!;
    expect(plan.segs.length * (perSeg / 2) * chunkSize).toBeLessThanOrEqual(COMPACT_PASS_BYTES);
    expect(plan.segs.length).toBe(COMPACT_PASS_BYTES / chunkSize / (perSeg / 2));
  });

  it('is worth it only when it gives back at least a checkpoint that is not cheap', () => {
    const c = usage([0, 4], [0, 16]); // gives back 12 holes of 64 KiB = 768 KiB
    expect(planPass([c], COMPACT_CHEAP_CHECKPOINT_BYTES)?.segs).toEqual([1]); // cheap checkpoint
    expect(planPass([c], 2 * COMPACT_CHEAP_CHECKPOINT_BYTES)).toBeNull(); // 768 KiB back < 2 MiB written
    const bigChunks = usage([0, 4], [0, 16], { chunkSize: 1024 * 1024 }); // 12 MiB back
    expect(planPass([bigChunks], 2 * COMPACT_CHEAP_CHECKPOINT_BYTES)?.segs).toEqual([1]);
  });

  it('chooses the class whose pass gives back the most bytes', () => {
    const small = usage([0, 4], [0, 16], { chunkSize: 4096 });
    const big = usage([0, 4], [0, 16], { chunkSize: 65536 });
    expect(planPass([small, big], 0)?.usage).toBe(big);
  });
});

describe('remapEntries', () => {
  it('rewrites entries naming victim slots to their copies, keeps births, reports misses', () => {
    // Victim segment 2 (slots 32..47): slot 33 -> 5, slot 40 has no copy.
    const to = new Uint32Array(PER_SEG).fill(NO_COPY);
    to[1] = 5;
    const page = new Uint32Array([33, 7, 40, 8, 3, 9, 33, 10]);
    const moves: [number, number][] = [];
    const r = remapEntries([page], new Map([[2, to]]), PER_SEG, (a, b) => moves.push([a, b]));
    expect([...page]).toEqual([5, 7, 40, 8, 3, 9, 5, 10]);
    expect(r.remapped).toBe(2);
    expect([...r.missed]).toEqual([2]);
    expect(moves).toEqual([[33, 5], [33, 5]]);
  });
});
