// Per-chunk locks of one volume's head: a write or zero holds the chunks it touches from its
// plan to its map update, because one JS thread still interleaves at every await (a partial
// chunk's read-merge-write must not race another write of that chunk; nbdkit's rmw_lock).

export class RangeLock {
  /** Chunk -> the promise its holder resolves on release. */
  private readonly held = new Map<number, Promise<void>>();

  /** Locks chunks first..last if none is held; returns the release, or null. */
  tryLock(first: number, last: number): (() => void) | null {
    const held = this.held;
    for (let c = first; c <= last; c++) if (held.has(c)) return null;
    let release!: () => void;
    const p = new Promise<void>((r) => (release = r));
    for (let c = first; c <= last; c++) held.set(c, p);
    return () => {
      for (let c = first; c <= last; c++) held.delete(c);
      release();
    };
  }

  /** Waits until chunks first..last are all free, then locks them. */
  async lock(first: number, last: number): Promise<() => void> {
    for (;;) {
      const got = this.tryLock(first, last);
      if (got) return got;
      let wait: Promise<void> | undefined;
      for (let c = first; c <= last && !wait; c++) wait = this.held.get(c);
      if (wait) await wait;
    }
  }
}
