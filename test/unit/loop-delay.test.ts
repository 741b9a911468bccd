// server.stats' event-loop window (util/loop-delay.ts): readings change nothing, so callers
// polling at different rates each see the worst delay of the window they ask for. A fake
// histogram and hand-driven seconds keep it independent of the machine's load.
import { describe, expect, it } from 'vitest';
import { LOOP_DELAY_WINDOW_MAX_SECONDS, LoopDelayMonitor, type DelaySource } from '../../src/util/loop-delay.ts';

/** A histogram whose samples the test sets (ms). */
class FakeHistogram implements DelaySource {
  samples: number[] = [];
  get count(): number {
    return this.samples.length;
  }
  get max(): number {
    return this.samples.length ? Math.max(...this.samples) * 1e6 : 0;
  }
  percentile(p: number): number {
    const s = [...this.samples].sort((a, b) => a - b);
    return (s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? 0) * 1e6;
  }
  reset(): void {
    this.samples = [];
  }
  enable(): boolean {
    return true;
  }
  disable(): boolean {
    return true;
  }
}

function monitor(): { m: LoopDelayMonitor; h: FakeHistogram } {
  const h = new FakeHistogram();
  const m = new LoopDelayMonitor(() => h, false);
  m.start();
  return { m, h };
}

describe('event-loop delay windows', () => {
  it('a reading does not cut another caller\'s window', () => {
    const { m, h } = monitor();
    h.samples.push(1, 120, 2);
    expect(m.read().maxMs).toBe(120);
    // The console's poll a second later must not hide the block from a monitoring script.
    m.rotate();
    h.samples.push(1);
    expect(m.read(1).maxMs).toBe(1);
    expect(m.read().maxMs).toBe(120);
    expect(m.read(60).maxMs).toBe(120);
  });

  it('a block leaves the window once it is older than the window', () => {
    const { m, h } = monitor();
    h.samples.push(80);
    m.rotate(); // second 1: 80 ms
    for (let i = 0; i < 9; i++) {
      h.samples.push(3);
      m.rotate();
    }
    h.samples.push(4); // the current second
    expect(m.read(10).maxMs).toBe(4);
    expect(m.read(11).maxMs).toBe(80);
    expect(m.read(11).p99Ms).toBe(80);
    expect(m.read(2).maxMs).toBe(4);
  });

  it('the ring wraps: the oldest second is forgotten after LOOP_DELAY_WINDOW_MAX_SECONDS', () => {
    const { m, h } = monitor();
    h.samples.push(500);
    m.rotate();
    for (let i = 0; i < LOOP_DELAY_WINDOW_MAX_SECONDS - 1; i++) m.rotate(); // seconds without a sample
    expect(m.read(LOOP_DELAY_WINDOW_MAX_SECONDS).maxMs).toBe(0);
    // Windows past the ring's length read as the whole ring.
    h.samples.push(7);
    expect(m.read(10 * LOOP_DELAY_WINDOW_MAX_SECONDS).maxMs).toBe(7);
  });

  it('no sample yet reads 0', () => {
    const { m } = monitor();
    expect(m.read()).toMatchObject({ maxMs: 0, p99Ms: 0 });
  });
});
