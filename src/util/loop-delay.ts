// Event-loop delay over a window that each caller chooses (server.stats): how long the loop was
// blocked at most, the delay every NBD reply queued meanwhile also waited. perf_hooks samples it;
// every second the second's longest delay and 99th percentile go into a ring, and a reading is
// the worst of the last N seconds (plus the current one). Readings change nothing, so a console
// polling every second and a monitoring script polling every minute do not cut each other's
// windows (one shared window per reading did).
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** Sampling resolution: a block shorter than this may go unseen (the timer is unref'd by Node). */
export const LOOP_DELAY_SAMPLE_MS = 2;
/** The longest window a caller may ask for, seconds (the ring's length). */
export const LOOP_DELAY_WINDOW_MAX_SECONDS = 300;
/** The window of a caller that names none, seconds. */
export const LOOP_DELAY_WINDOW_DEFAULT_SECONDS = 60;
/** Length of one entry of the ring. */
const SECOND_MS = 1000;

export interface LoopDelayWindow {
  /** Longest delay in the window, ms (0: no sample yet). */
  maxMs: number;
  /** The highest per-second 99th percentile in the window, ms. */
  p99Ms: number;
  /** Length of the window, seconds (shorter than asked while the monitor has watched less long). */
  windowSeconds: number;
}

/** What the monitor reads of perf_hooks' histogram (tests give their own). */
export type DelaySource = Pick<IntervalHistogram, 'count' | 'max' | 'percentile' | 'reset' | 'enable' | 'disable'>;

export class LoopDelayMonitor {
  private readonly source: () => DelaySource;
  private readonly ticking: boolean;
  private hist: DelaySource | null = null;
  private timer: NodeJS.Timeout | null = null;
  private since = 0;
  /** Completed seconds, newest last: max and p99 in ns (NaN: no sample that second). */
  private readonly maxNs = new Float64Array(LOOP_DELAY_WINDOW_MAX_SECONDS);
  private readonly p99Ns = new Float64Array(LOOP_DELAY_WINDOW_MAX_SECONDS);
  private next = 0;
  private filled = 0;
  /** When the current (incomplete) second started. */
  private secondStart = 0;

  /** `ticking` false: no timer, the caller calls `rotate()` (tests). */
  constructor(source: () => DelaySource = () => monitorEventLoopDelay({ resolution: LOOP_DELAY_SAMPLE_MS }), ticking = true) {
    this.source = source;
    this.ticking = ticking;
  }

  /** Starts watching (idempotent); the first reading starts it too. */
  start(): void {
    if (this.hist) return;
    this.hist = this.source();
    this.hist.enable();
    this.since = this.secondStart = performance.now();
    if (!this.ticking) return;
    this.timer = setInterval(() => this.rotate(), SECOND_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.hist?.disable();
    this.timer = null;
    this.hist = null;
  }

  /** The current second ends: its figures go into the ring (the timer's job, every second). */
  rotate(): void {
    const h = this.hist!;
    const ok = h.count > 0;
    this.maxNs[this.next] = ok ? h.max : NaN;
    this.p99Ns[this.next] = ok ? h.percentile(99) : NaN;
    this.next = (this.next + 1) % LOOP_DELAY_WINDOW_MAX_SECONDS;
    this.filled = Math.min(this.filled + 1, LOOP_DELAY_WINDOW_MAX_SECONDS);
    h.reset();
    this.secondStart = performance.now();
  }

  /** The worst of the last `seconds` (1..LOOP_DELAY_WINDOW_MAX_SECONDS): the current second and the completed ones before it. */
  read(seconds: number = LOOP_DELAY_WINDOW_DEFAULT_SECONDS): LoopDelayWindow {
    this.start();
    const h = this.hist!;
    const n = Math.max(1, Math.min(LOOP_DELAY_WINDOW_MAX_SECONDS, Math.floor(seconds)));
    let max = h.count > 0 ? h.max : 0;
    let p99 = h.count > 0 ? h.percentile(99) : 0;
    // The current second counts as one of the n: n - 1 completed ones before it.
    const k = Math.min(n - 1, this.filled);
    for (let i = 1; i <= k; i++) {
      const at = (this.next - i + LOOP_DELAY_WINDOW_MAX_SECONDS) % LOOP_DELAY_WINDOW_MAX_SECONDS;
      const m = this.maxNs[at] as number;
      if (Number.isNaN(m)) continue;
      max = Math.max(max, m);
      p99 = Math.max(p99, this.p99Ns[at] as number);
    }
    const now = performance.now();
    const covered = Math.min(now - this.since, k * SECOND_MS + (now - this.secondStart));
    // Nanoseconds; huge values stand for "no sample" in some Node versions.
    const ms = (ns: number): number => (Number.isFinite(ns) && ns < 1e15 ? Math.round(ns / 1e4) / 100 : 0);
    return { maxMs: ms(max), p99Ms: ms(p99), windowSeconds: Math.round(covered) / 1000 };
  }
}
