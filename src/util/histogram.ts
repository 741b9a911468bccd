// A cumulative histogram with fixed upper bounds (Prometheus' `le` buckets): observe() is O(buckets)
// with no allocation, so the request path can afford it. Bounds are in the unit observed (seconds).
export class Histogram {
  readonly bounds: readonly number[];
  /** counts[i]: observations <= bounds[i] (not cumulative; the encoder sums them). Last: +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    let i = 0;
    while (i < this.bounds.length && v > this.bounds[i]!) i++;
    this.counts[i] = this.counts[i]! + 1;
    this.sum += v;
    this.count++;
  }
}

/** Latency of an NBD request or a commit: 50 µs (a cached read) to 10 s (a stalled disk). */
export const LATENCY_BUCKETS_SECONDS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

/** Control operations (snapshot create and delete quiesce, commit and may wait for writes). */
export const OPERATION_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;
