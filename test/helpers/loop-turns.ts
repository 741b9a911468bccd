// Counts turns of the event loop while awaited work runs: a callback re-queued with setImmediate
// runs once per turn, so the count is above zero exactly when the work yielded (util/slice.ts
// yields with setImmediate), however fast it ran. A 0 ms setInterval needs a whole millisecond to
// pass between turns and counted nothing when a short sliced walk finished sooner.
import { Slicer } from '../../src/util/slice.ts';

export function countLoopTurns(): { stop(): number } {
  let turns = 0;
  let running = true;
  const tick = (): void => {
    if (!running) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  return {
    stop() {
      running = false;
      return turns;
    },
  };
}

/** A slicer whose slice is always used up: a sliced walk yields at every point where it may. */
export class EverySlice extends Slicer {
  override due(): boolean {
    return true;
  }
}
