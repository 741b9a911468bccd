// Which byte ranges differ between two maps of one volume: a walk of both L1s that skips pages
// the two share (README.md "Diff and accounting"). Sliced (util/slice.ts): the walk yields the
// event loop between pages, so a diff of two big maps never stalls I/O. The L1s are taken once at
// the start; a page is compared in one turn, so a write or a compaction switch between turns is
// seen either whole or not at all for that page (a diff against the live head is as of each page).
import { Slicer } from '../util/slice.ts';
import { ENTRIES_PER_PAGE, PAGE_SHIFT, UNMAPPED, type NodeMap } from './block-map.ts';
import type { ChangedExtent, DiffPage } from './types.ts';

/** Changed extents per diff() answer unless the caller asks for fewer. */
export const DIFF_LIMIT_DEFAULT = 1 << 20;

/** Exact chunk-granular diff of two maps of one volume (pages shared by both are skipped). */
export async function diffMaps(a: NodeMap, b: NodeMap, chunkSize: number, size: number, start: number, limit: number): Promise<DiffPage> {
  const extents: ChangedExtent[] = [];
  const slicer = new Slicer();
  if (a.l1 === b.l1) return { extents, next: null };
  const pa = a.l1.pages;
  const pb = b.l1.pages;
  let c = Math.floor(start / chunkSize);
  const n = Math.ceil(size / chunkSize);
  while (c < n) {
    if (slicer.due()) await slicer.yield();
    const pi = c >>> PAGE_SHIFT;
    const x = pa[pi] ?? null;
    const y = pb[pi] ?? null;
    const pageEnd = Math.min(n, (pi + 1) * ENTRIES_PER_PAGE);
    if (x === y) {
      c = pageEnd;
      continue;
    }
    for (; c < pageEnd; c++) {
      const i = (c & (ENTRIES_PER_PAGE - 1)) * 2;
      const sx = x ? x.at(i) : UNMAPPED;
      const sy = y ? y.at(i) : UNMAPPED;
      if (sx === sy && (x ? x.at(i + 1) : 0) === (y ? y.at(i + 1) : 0)) continue;
      const off = c * chunkSize;
      const len = Math.min(chunkSize, size - off);
      const last = extents[extents.length - 1];
      if (last && last.offset + last.length === off) last.length += len;
      else {
        if (extents.length >= limit) return { extents, next: off };
        extents.push({ offset: off, length: len });
      }
    }
  }
  return { extents, next: null };
}
