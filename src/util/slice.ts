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

/**
 * A walk written once for both ways of running it: a generator that does its work and `yield`s
 * at each point where it may let others run (between slices). `walkNow` runs it in this turn,
 * `walkSliced` yields the event loop at those points once the slicer's time is up.
 */
export type Walk<T> = Generator<void, T, void>;

/** Runs `walk` to its end in this turn of the event loop. */
export function walkNow<T>(walk: Walk<T>): T {
  for (;;) {
    const r = walk.next();
    if (r.done) return r.value;
  }
}

/** Runs `walk`, letting the event loop turn at its yield points whenever `slicer` is due. */
export async function walkSliced<T>(walk: Walk<T>, slicer: Slicer = new Slicer()): Promise<T> {
  for (;;) {
    const r = walk.next();
    if (r.done) return r.value;
    if (slicer.due()) await slicer.yield();
  }
}
