// Runs of consecutive numbers in a sorted list (slots or chunks): one I/O or one record per run.

/** Calls fn(i, j) for each run a[i..j) of consecutive numbers (runs never cross a multiple of `cut`). */
export function forRuns(a: readonly number[], fn: (i: number, j: number) => void, cut = Infinity): void {
  let i = 0;
  while (i < a.length) {
    let j = i + 1;
    while (j < a.length && a[j] === (a[j - 1] as number) + 1 && (a[j] as number) % cut !== 0) j++;
    fn(i, j);
    i = j;
  }
}
