// Free lists of reusable memory by size, with a cap on the bytes they keep idle: what the merge
// buffers (storage/merge-buffers.ts) and the long-READ reply buffers (server/reply-buffers.ts)
// share. Each caller decides what a size is and which items may come back.

export class IdleLists<T> {
  private readonly lists = new Map<number, T[]>();
  private idleBytes = 0;
  private readonly maxIdleBytes: number;

  constructor(maxIdleBytes: number) {
    this.maxIdleBytes = maxIdleBytes;
  }

  /** The last item put back at `size`, or undefined when none is idle. */
  take(size: number): T | undefined {
    const item = this.lists.get(size)?.pop();
    if (item !== undefined) this.idleBytes -= size;
    return item;
  }

  /** Keeps `item` of `size` bytes; false (not kept) when that would pass the cap. */
  put(size: number, item: T): boolean {
    if (this.idleBytes + size > this.maxIdleBytes) return false;
    let list = this.lists.get(size);
    if (list === undefined) this.lists.set(size, (list = []));
    list.push(item);
    this.idleBytes += size;
    return true;
  }

  /** Bytes idle now. */
  get bytes(): number {
    return this.idleBytes;
  }
}
