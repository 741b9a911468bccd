// Event-loop delay between two readings (server.stats): how long the loop was blocked at most,
// the delay every NBD reply queued meanwhile also waited. perf_hooks samples it; each reading
// starts a new window, so a monitoring loop sees the worst block since its previous call.
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** Sampling resolution: a block shorter than this may go unseen (the timer is unref'd by Node). */
export const LOOP_DELAY_SAMPLE_MS = 2;

export interface LoopDelayWindow {
  /** Longest delay in the window, ms (0: no sample yet). */
  maxMs: number;
  p99Ms: number;
  /** Length of the window, seconds. */
  windowSeconds: number;
}

export class LoopDelayMonitor {
  private hist: IntervalHistogram | null = null;
  private since = 0;

  /** The window since the previous reading (the first reading: since the first use), then a new one. */
  read(): LoopDelayWindow {
    if (!this.hist) {
      this.hist = monitorEventLoopDelay({ resolution: LOOP_DELAY_SAMPLE_MS });
      this.hist.enable();
      this.since = performance.now();
    }
    const h = this.hist;
    // Nanoseconds; NaN or huge values before the first sample.
    const ms = (ns: number): number => (h.count > 0 && Number.isFinite(ns) ? Math.round(ns / 1e4) / 100 : 0);
    const now = performance.now();
    const out = { maxMs: ms(h.max), p99Ms: ms(h.percentile(99)), windowSeconds: Math.round(now - this.since) / 1000 };
    h.reset();
    this.since = now;
    return out;
  }
}
