// Long walks on the event loop in slices: a walk checks `due()` between units of work and, once
// it has run SLICE_MS, awaits `yield()` (setImmediate), so NBD requests and timers queued meanwhile
// run before it goes on. One turn of the loop then never holds the CPU much longer than SLICE_MS.

/** The longest a sliced walk keeps the event loop before letting others run, ms. */
export const SLICE_MS = 4;

export class Slicer {
  private start = performance.now();
  /** Slices yielded so far. */
  yields = 0;

  due(): boolean {
    return performance.now() - this.start >= SLICE_MS;
  }

  async yield(): Promise<void> {
    this.yields++;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.start = performance.now();
  }
}
