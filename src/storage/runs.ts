// Runs of consecutive numbers in a sorted list (slots or chunks): one I/O or one record per run.

/**
 * The end of the run that starts at a[i]: the first j > i where a[j] !== a[j - 1] + 1, or where
 * a[j] is a multiple of `cut` (runs never cross one: a segment boundary). No allocation, so the
 * write path may use it per request.
 */
export function runEnd(a: readonly number[], i: number, cut = Infinity): number {
  let j = i + 1;
  while (j < a.length && a[j] === (a[j - 1] as number) + 1 && (a[j] as number) % cut !== 0) j++;
  return j;
}
