// Durations and failures of named background and control operations (snapshot create/delete,
// schedule and backup runs) for the metrics endpoint. Each operation name is fixed in the code
// that calls timed(), so the set of series stays small.
import { Histogram, OPERATION_BUCKETS_SECONDS } from './histogram.ts';

export interface OperationFigures {
  /** Every run, failed or not. */
  duration: Histogram;
  failures: number;
}

export class OperationMetrics {
  private readonly ops = new Map<string, OperationFigures>();

  observe(op: string, seconds: number, ok: boolean): void {
    let f = this.ops.get(op);
    if (!f) {
      f = { duration: new Histogram(OPERATION_BUCKETS_SECONDS), failures: 0 };
      this.ops.set(op, f);
    }
    f.duration.observe(seconds);
    if (!ok) f.failures++;
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
    metrics.observe(op, (performance.now() - t0) / 1000, true);
    return r;
  } catch (e) {
    metrics.observe(op, (performance.now() - t0) / 1000, false);
    throw e;
  }
}
