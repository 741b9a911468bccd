// Which columns of the changes strip to paint: pure (no DOM), so node tests check it directly.

/** Runs of columns, [first, last] inclusive, that extents (sorted by offset) touch on a disk of `size` bytes. */
export function changedColumns(extents: readonly { offset: number; length: number }[], size: number, columns: number): [number, number][] {
  const runs: [number, number][] = [];
  if (size <= 0) return runs;
  for (const e of extents) {
    const first = Math.min(columns - 1, Math.floor((e.offset / size) * columns));
    const last = Math.min(columns - 1, Math.max(first, Math.ceil(((e.offset + e.length) / size) * columns) - 1));
    const prev = runs[runs.length - 1];
    if (prev !== undefined && first <= prev[1] + 1) prev[1] = Math.max(prev[1], last);
    else runs.push([first, last]);
  }
  return runs;
}
