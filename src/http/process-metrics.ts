// Process figures for the metrics endpoint: memory, CPU, start time (the names Prometheus' client
// libraries use), and event-loop delay over the last complete window, since a blocked loop delays
// every NBD reply at once.
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { MetricFamily } from './prom-text.ts';

/** Event-loop delay is reported over windows of this length (the last complete one). */
export const LOOP_DELAY_WINDOW_MS = 60_000;
/** Sampling resolution of the loop-delay monitor. */
const LOOP_DELAY_RESOLUTION_MS = 10;

interface LoopWindow { p50: number; p99: number; max: number }

export class ProcessMetrics {
  private readonly loop: IntervalHistogram;
  private readonly timer: NodeJS.Timeout;
  private last: LoopWindow | null = null;
  private readonly startTime = Math.round(Date.now() / 1000 - process.uptime());

  constructor() {
    this.loop = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
    this.loop.enable();
    this.timer = setInterval(() => this.roll(), LOOP_DELAY_WINDOW_MS).unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.loop.disable();
  }

  families(): MetricFamily[] {
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    // Before the first window ends, the current partial one is better than nothing.
    const w = this.last ?? this.current();
    const g = (name: string, help: string, value: number): MetricFamily => ({ name, help, type: 'gauge', samples: [{ labels: {}, value }] });
    return [
      g('process_resident_memory_bytes', 'Resident memory size in bytes.', mem.rss),
      g('process_heap_bytes', 'V8 heap in use, in bytes.', mem.heapUsed),
      { name: 'process_cpu_seconds_total', help: 'User and system CPU time spent, in seconds.', type: 'counter', samples: [{ labels: {}, value: (cpu.user + cpu.system) / 1e6 }] },
      g('process_start_time_seconds', 'Start time of the process since the Unix epoch, in seconds.', this.startTime),
      g('snapnbd_event_loop_delay_p50_seconds', `Median event-loop delay over the last ${LOOP_DELAY_WINDOW_MS / 1000} s window, in seconds.`, w.p50),
      g('snapnbd_event_loop_delay_p99_seconds', `99th percentile event-loop delay over the last ${LOOP_DELAY_WINDOW_MS / 1000} s window, in seconds.`, w.p99),
      g('snapnbd_event_loop_delay_max_seconds', `Longest event-loop delay over the last ${LOOP_DELAY_WINDOW_MS / 1000} s window, in seconds.`, w.max),
    ];
  }

  private current(): LoopWindow {
    // The monitor reports nanoseconds; it has no samples (NaN or huge) before its first tick.
    const s = (ns: number): number => (Number.isFinite(ns) && this.loop.count > 0 ? ns / 1e9 : 0);
    return { p50: s(this.loop.percentile(50)), p99: s(this.loop.percentile(99)), max: s(this.loop.max) };
  }

  private roll(): void {
    this.last = this.current();
    this.loop.reset();
  }
}
