// The adaptive read strategy (src/storage/sync-io.ts): synchronous while reads are fast, the
// thread pool after a window with too many slow ones, back to synchronous after fast probes.
import { describe, expect, it } from 'vitest';
import { readStrategy, SYNC_IO_RULE, SyncIoStrategy, writeStrategy } from '../../src/storage/sync-io.ts';

const FAST = 5_000;
const SLOW = 5_000_000;

/** Runs n reads, each synchronous one taking `ns`; returns how many were synchronous. */
function run(s: SyncIoStrategy, n: number, ns: number): number {
  let sync = 0;
  for (let i = 0; i < n; i++) {
    if (s.next()) {
      sync++;
      s.record(ns, 4096);
    }
  }
  return sync;
}

describe('SyncIoStrategy', () => {
  it('stays synchronous while reads are fast, even with a few slow ones per window', () => {
    const s = new SyncIoStrategy();
    expect(run(s, 1000, FAST)).toBe(1000);
    for (let w = 0; w < 10; w++) {
      run(s, SYNC_IO_RULE.missesToAsync - 1, SLOW);
      run(s, SYNC_IO_RULE.window - SYNC_IO_RULE.missesToAsync + 1, FAST);
    }
    expect(s.sync).toBe(true);
  });

  it('switches to the pool after a slow window and only probes from there', () => {
    const s = new SyncIoStrategy();
    run(s, SYNC_IO_RULE.window, SLOW);
    expect(s.sync).toBe(false);
    const probes = run(s, SYNC_IO_RULE.probeEvery * (SYNC_IO_RULE.probes - 1), SLOW);
    expect(probes).toBe(SYNC_IO_RULE.probes - 1);
    run(s, SYNC_IO_RULE.probeEvery * 10, SLOW);
    expect(s.sync).toBe(false);
  });

  it('returns to synchronous reads when the probes are fast again', () => {
    const s = new SyncIoStrategy();
    run(s, SYNC_IO_RULE.window, SLOW);
    expect(s.sync).toBe(false);
    run(s, SYNC_IO_RULE.probeEvery * SYNC_IO_RULE.probes, FAST);
    expect(s.sync).toBe(true);
  });

  it('one stalled I/O moves to the pool at once, and no probe is tried until the hold has passed', () => {
    let now = 0;
    const s = new SyncIoStrategy(() => now);
    expect(run(s, 1000, FAST)).toBe(1000);
    s.next();
    s.record(SYNC_IO_RULE.stallNs + 1, 4096);
    expect(s.sync).toBe(false);
    // Within the hold, not one synchronous probe, however many I/Os.
    expect(run(s, SYNC_IO_RULE.probeEvery * 20, FAST)).toBe(0);
    now += SYNC_IO_RULE.stallHoldMinMs;
    // After it, probes again, and fast ones bring the synchronous mode back.
    expect(run(s, SYNC_IO_RULE.probeEvery * SYNC_IO_RULE.probes, FAST)).toBe(SYNC_IO_RULE.probes);
    expect(s.sync).toBe(true);
  });

  it('the hold starts short, doubles while the probes after it stall again, and is short again once I/O is synchronous', () => {
    let now = 0;
    const s = new SyncIoStrategy(() => now);
    /** The ms after a stall before the first synchronous probe (1 ms steps; 64 I/Os per step). */
    const holdAfterStall = (): number => {
      s.record(SYNC_IO_RULE.stallNs + 1, 4096);
      expect(s.sync).toBe(false);
      const start = now;
      while (run(s, SYNC_IO_RULE.probeEvery, FAST) === 0) now += 1;
      // that probe was fast: it must not end the pool mode alone
      expect(s.sync).toBe(false);
      return now - start;
    };
    s.next();
    const holds = [holdAfterStall()];
    // each probe that stalls again doubles the hold, up to the maximum
    for (let i = 0; i < 6; i++) holds.push(holdAfterStall());
    const min = SYNC_IO_RULE.stallHoldMinMs;
    const max = SYNC_IO_RULE.stallHoldMaxMs;
    expect(holds).toEqual([min, 2 * min, 4 * min, 8 * min, 16 * min, max, max].map((h) => Math.min(h, max)));
    expect(max).toBeGreaterThan(8 * min);
    // fast probes: synchronous again, and the next stall holds the short time again
    expect(run(s, SYNC_IO_RULE.probeEvery * (SYNC_IO_RULE.probes - 1), FAST)).toBe(SYNC_IO_RULE.probes - 1);
    expect(s.sync).toBe(true);
    expect(run(s, 1000, FAST)).toBe(1000);
    s.next();
    expect(holdAfterStall()).toBe(min);
  });

  it('a stall after a slow window moved the I/O to the pool holds the short time', () => {
    let now = 0;
    const s = new SyncIoStrategy(() => now);
    run(s, SYNC_IO_RULE.window, SLOW);
    expect(s.sync).toBe(false);
    run(s, SYNC_IO_RULE.probeEvery - 1, FAST);
    expect(s.next()).toBe(true);
    s.record(SYNC_IO_RULE.stallNs + 1, 4096);
    expect(run(s, SYNC_IO_RULE.probeEvery * 20, FAST)).toBe(0);
    now += SYNC_IO_RULE.stallHoldMinMs - 1;
    expect(run(s, SYNC_IO_RULE.probeEvery * 20, FAST)).toBe(0);
    now += 1;
    expect(run(s, SYNC_IO_RULE.probeEvery, FAST)).toBe(1);
  });

  it('writes (isolated stalls): a stall alone stays synchronous, a second within isolatedStallMs moves to the pool', () => {
    let now = 0;
    const s = new SyncIoStrategy(() => now, true);
    expect(run(s, 1000, FAST)).toBe(1000);
    // A one-off stall (the commit's fdatasync met once, a preemption): still synchronous.
    s.next();
    s.record(SYNC_IO_RULE.stallNs + 1, 4096);
    expect(s.sync).toBe(true);
    expect(run(s, 1000, FAST)).toBe(1000);
    // Another one after isolatedStallMs: alone again.
    now += SYNC_IO_RULE.isolatedStallMs + 1;
    s.next();
    s.record(SYNC_IO_RULE.stallNs + 1, 4096);
    expect(s.sync).toBe(true);
    // Throttling: the next stall comes within isolatedStallMs and moves to the pool with the hold.
    now += SYNC_IO_RULE.isolatedStallMs - 1;
    s.next();
    s.record(SYNC_IO_RULE.stallNs + 1, 4096);
    expect(s.sync).toBe(false);
    expect(run(s, SYNC_IO_RULE.probeEvery * 20, FAST)).toBe(0);
    now += SYNC_IO_RULE.stallHoldMinMs;
    // A probe that stalls again in the pool doubles the hold at once (no second stall needed).
    while (!s.next()) now += 1;
    s.record(SYNC_IO_RULE.stallNs + 1, 4096);
    expect(s.sync).toBe(false);
    now += SYNC_IO_RULE.stallHoldMinMs;
    expect(run(s, SYNC_IO_RULE.probeEvery * 20, FAST)).toBe(0);
    now += SYNC_IO_RULE.stallHoldMinMs;
    expect(run(s, SYNC_IO_RULE.probeEvery * SYNC_IO_RULE.probes, FAST)).toBe(SYNC_IO_RULE.probes);
    expect(s.sync).toBe(true);
  });

  it('isolated stalls still count as slow I/O: a window of them moves to the pool', () => {
    let now = 0;
    const s = new SyncIoStrategy(() => now, true);
    for (let i = 0; i < SYNC_IO_RULE.window && s.sync; i++) {
      now += SYNC_IO_RULE.isolatedStallMs + 1;
      s.next();
      s.record(i % 8 === 0 ? SYNC_IO_RULE.stallNs + 1 : FAST, 4096);
    }
    expect(s.sync).toBe(false);
  });

  it('the process strategies: a write stall alone keeps writes synchronous, a read stall moves reads', () => {
    expect(writeStrategy).toBeInstanceOf(SyncIoStrategy);
    const w = Object.create(writeStrategy) as SyncIoStrategy;
    const r = Object.create(readStrategy) as SyncIoStrategy;
    for (const s of [w, r]) {
      s.next();
      s.record(SYNC_IO_RULE.stallNs + 1, 4096);
    }
    expect(w.sync).toBe(true);
    expect(r.sync).toBe(false);
  });

  it('writes: block allocation and preemption (tens of µs) stay synchronous; throttling sleeps (ms) move to the pool', () => {
    // The process strategies, copied so the test does not change them.
    const w = Object.create(writeStrategy) as SyncIoStrategy;
    const r = Object.create(readStrategy) as SyncIoStrategy;
    // Every write 50 µs: slow for a read, ordinary for a write into fresh file space.
    const allocating = 50_000;
    expect(run(w, SYNC_IO_RULE.window * 10, allocating)).toBe(SYNC_IO_RULE.window * 10);
    expect(w.sync).toBe(true);
    run(r, SYNC_IO_RULE.window, allocating);
    expect(r.sync).toBe(false);
    // Throttled writes: each sleeps a couple of milliseconds, below the stall rule's 10 ms.
    const throttled = 2_000_000;
    expect(throttled).toBeLessThan(SYNC_IO_RULE.stallNs);
    run(w, SYNC_IO_RULE.window, throttled);
    expect(w.sync).toBe(false);
  });

  it('a large read is allowed its copy time before it counts as slow', () => {
    const s = new SyncIoStrategy();
    const big = 1024 * 1024;
    for (let i = 0; i < SYNC_IO_RULE.window; i++) s.record(SYNC_IO_RULE.slowBaseNs + big * SYNC_IO_RULE.nsPerByte - 1, big);
    expect(s.sync).toBe(true);
  });
});
