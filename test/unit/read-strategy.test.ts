// The adaptive read strategy (src/storage/file-io.ts): synchronous while reads are fast, the
// thread pool after a window with too many slow ones, back to synchronous after fast probes.
import { describe, expect, it } from 'vitest';
import { READ_STRATEGY, ReadStrategy } from '../../src/storage/file-io.ts';

const FAST = 5_000;
const SLOW = 5_000_000;

/** Runs n reads, each synchronous one taking `ns`; returns how many were synchronous. */
function run(s: ReadStrategy, n: number, ns: number): number {
  let sync = 0;
  for (let i = 0; i < n; i++) {
    if (s.next()) {
      sync++;
      s.record(ns, 4096);
    }
  }
  return sync;
}

describe('ReadStrategy', () => {
  it('stays synchronous while reads are fast, even with a few slow ones per window', () => {
    const s = new ReadStrategy();
    expect(run(s, 1000, FAST)).toBe(1000);
    for (let w = 0; w < 10; w++) {
      run(s, READ_STRATEGY.missesToAsync - 1, SLOW);
      run(s, READ_STRATEGY.window - READ_STRATEGY.missesToAsync + 1, FAST);
    }
    expect(s.sync).toBe(true);
  });

  it('switches to the pool after a slow window and only probes from there', () => {
    const s = new ReadStrategy();
    run(s, READ_STRATEGY.window, SLOW);
    expect(s.sync).toBe(false);
    const probes = run(s, READ_STRATEGY.probeEvery * (READ_STRATEGY.probes - 1), SLOW);
    expect(probes).toBe(READ_STRATEGY.probes - 1);
    run(s, READ_STRATEGY.probeEvery * 10, SLOW);
    expect(s.sync).toBe(false);
  });

  it('returns to synchronous reads when the probes are fast again', () => {
    const s = new ReadStrategy();
    run(s, READ_STRATEGY.window, SLOW);
    expect(s.sync).toBe(false);
    run(s, READ_STRATEGY.probeEvery * READ_STRATEGY.probes, FAST);
    expect(s.sync).toBe(true);
  });

  it('a large read is allowed its copy time before it counts as slow', () => {
    const s = new ReadStrategy();
    const big = 1024 * 1024;
    for (let i = 0; i < READ_STRATEGY.window; i++) s.record(READ_STRATEGY.slowBaseNs + big * READ_STRATEGY.nsPerByte - 1, big);
    expect(s.sync).toBe(true);
  });
});
