// Durations and failures of named background and control operations (snapshot create/delete,
// schedule and backup runs) for the metrics endpoint. Each operation name is fixed in the code
// that calls timed(), so the set of series stays small.
import { Histogram, OPERATION_BUCKETS_SECONDS } from './histogram.ts';

export interface OperationFigures {
  /** Every run, failed or not. */
  duration: Histogram;
  failures: number;
  /** The last run's error, or null when it succeeded (`snapnbd health` reports it). */
  lastError: string | null;
}

export class OperationMetrics {
  private readonly ops = new Map<string, OperationFigures>();

  /** `error`: null for a success, else what went wrong. */
  observe(op: string, seconds: number, error: string | null): void {
    let f = this.ops.get(op);
    if (!f) {
      f = { duration: new Histogram(OPERATION_BUCKETS_SECONDS), failures: 0, lastError: null };
      this.ops.set(op, f);
    }
    f.duration.observe(seconds);
    f.lastError = error;
    if (error !== null) f.failures++;
  }

  all(): ReadonlyMap<string, OperationFigures> {
    return this.ops;
  }
}

/** Runs `fn`, recording its duration and outcome under `op` when a recorder is given. */
export async function timed<T>(metrics: OperationMetrics | undefined, op: string, fn: () => Promise<T>): Promise<T> {
  if (!metrics) return fn();
  const t0 = performance.now();
  try {
    const r = await fn();
    metrics.observe(op, (performance.now() - t0) / 1000, null);
    return r;
  } catch (e) {
    metrics.observe(op, (performance.now() - t0) / 1000, e instanceof Error ? e.message : String(e));
    throw e;
  }
}
