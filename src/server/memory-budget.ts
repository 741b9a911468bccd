// One budget of buffered request and reply bytes for the whole server: a READ's reply buffer or a
// WRITE's payload is charged when the request is accepted and released once its reply has left for
// the kernel. While the budget is spent, every connection stops reading requests (TCP backpressure
// on every client) until replies drain. Without it, each connection may hold its own in-flight cap
// (128 MiB), and a few dozen clients that never read their replies exhaust the host.
export const DEFAULT_MEMORY_BUDGET = 512 * 1024 * 1024;
/** Every connection may hold at least this much, so a well-behaved client is served while others hog the rest. */
export const MIN_SHARE = 4 * 1024 * 1024;

export class MemoryBudget {
  readonly limit: number;
  private usedBytes = 0;
  private readonly waiters = new Set<() => void>();

  constructor(limit: number) {
    this.limit = limit;
  }

  get used(): number {
    return this.usedBytes;
  }

  get exhausted(): boolean {
    return this.usedBytes >= this.limit;
  }

  charge(n: number): void {
    this.usedBytes += n;
  }

  release(n: number): void {
    const was = this.exhausted;
    this.usedBytes -= n;
    if (was && !this.exhausted) for (const wake of [...this.waiters]) wake();
  }

  /**
   * What one connection may hold before it stops reading: an equal share of the budget among the
   * connections, at least MIN_SHARE. A connection past its share, or holding anything while the
   * budget is spent, waits; one that holds nothing may always take one request.
   */
  mayRead(held: number): boolean {
    if (held === 0) return true;
    if (this.exhausted) return false;
    return held < Math.max(MIN_SHARE, Math.floor(this.limit / Math.max(1, this.waiters.size)));
  }

  /** `wake` runs each time the budget goes from spent to available. One subscriber per connection. */
  subscribe(wake: () => void): () => void {
    this.waiters.add(wake);
    return () => this.waiters.delete(wake);
  }
}
