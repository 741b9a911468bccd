// Serialises async work per key (a volume name): control methods that change the same volume run
// one after another, while different volumes proceed in parallel. Several keys are taken in
// sorted order so two multi-key callers can never deadlock.
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const releases: (() => void)[] = [];
    try {
      for (const key of sorted) releases.push(await this.lock(key));
      return await fn();
    } finally {
      for (const release of releases.reverse()) release();
    }
  }

  private async lock(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => { release = resolve; });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    return () => {
      release();
      // Last one out removes the entry so the map does not grow with every volume ever touched.
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
