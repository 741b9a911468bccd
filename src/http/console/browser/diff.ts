// The picture of what changed: snapshot.diff's extents (every page, up to a cap) drawn on a strip
// of the disk's address space, with the bytes changed. Extents are merged per drawn column, so a
// disk with a million small changes still draws a few hundred rectangles.
import { rpc } from './api.ts';
import { formatSize, h, plural, svg } from './dom.ts';
import { changedColumns } from './strip.ts';

/** Extents asked for per page, and the most pages read for one picture. */
export const DIFF_PAGE_LIMIT = 4096;
export const DIFF_MAX_PAGES = 64;
/** Columns the strip is divided into (the SVG scales to the page width). */
export const STRIP_COLUMNS = 1000;
const STRIP_HEIGHT = 32;

export interface DiffResult {
  volume: string;
  from: string;
  /** null: the live volume (head). */
  to: string | null;
  size: number;
  extents: { offset: number; length: number }[];
  bytes: number;
  /** false when DIFF_MAX_PAGES pages did not reach the end (bytes is then a lower bound). */
  complete: boolean;
}

interface DiffPage {
  extents: { offset: number; length: number }[];
  next: string | null;
}

export async function loadDiff(volume: string, from: string, to: string | null, size: number): Promise<DiffResult> {
  const extents: DiffPage['extents'] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const params: Record<string, unknown> = { volume, from, limit: DIFF_PAGE_LIMIT };
    if (to !== null) params.to = to;
    if (cursor !== null) params.cursor = cursor;
    const page: DiffPage = await rpc<DiffPage>('snapshot.diff', params);
    extents.push(...page.extents);
    cursor = page.next;
    pages++;
  } while (cursor !== null && pages < DIFF_MAX_PAGES);
  const bytes = extents.reduce((n, e) => n + e.length, 0);
  return { volume, from, to, size, extents, bytes, complete: cursor === null };
}

export function diffSummary(d: DiffResult): string {
  const to = d.to === null ? `${d.volume} (live)` : `${d.volume}@${d.to}`;
  const pct = d.size > 0 ? ` (${((d.bytes / d.size) * 100).toFixed(d.bytes === 0 ? 0 : 1)}% of ${formatSize(d.size)})` : '';
  return `${d.complete ? '' : 'at least '}${formatSize(d.bytes)} changed${pct} in ${plural(d.extents.length, 'extent')} from ${d.volume}@${d.from} to ${to}`;
}

export function diffStrip(d: DiffResult): HTMLElement {
  const label = diffSummary(d);
  const strip = svg('svg', {
    class: 'strip', viewBox: `0 0 ${STRIP_COLUMNS} ${STRIP_HEIGHT}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': label,
  }, svg('title', {}, label), svg('rect', { class: 'strip-bg', x: 0, y: 0, width: STRIP_COLUMNS, height: STRIP_HEIGHT }));
  for (const [a, b] of changedColumns(d.extents, d.size, STRIP_COLUMNS)) {
    strip.append(svg('rect', { class: 'strip-changed', x: a, y: 0, width: b - a + 1, height: STRIP_HEIGHT }));
  }
  return h('figure', { class: 'diff' },
    strip,
    h('div', { class: 'strip-scale', 'aria-hidden': 'true' }, h('span', {}, '0'), h('span', {}, formatSize(d.size))),
    h('figcaption', { id: 'diff-summary' }, label));
}
