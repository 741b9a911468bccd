// Read-around for small reads that miss the page cache (the ones file-io.ts would send to the
// thread pool). A 4 KiB random read that goes to the disk holds one of the four pool threads
// about as long as a read of the aligned 64 KiB around it: when the misses have locality (an
// image no bigger than the host's memory, read at random), reading the whole window fills the
// page cache up to 16 times faster (nbdkit's cow filter reads its whole 64 KiB block for the same
// reason). The windows read whole are remembered, so a later read inside one is known to be
// cached and runs synchronously on the event loop (~2.5x cheaper than a pool round trip) even
// while the other reads go to the pool. When the misses have no locality (a huge image read at
// random) the wider reads only cost disk bandwidth: read-around turns off while too few reads
// land in a remembered window, and is retried now and then. bench/README.md, "Cold reads".
import { openSync, readSync } from 'node:fs';

export const READ_AROUND = {
  /** The window read around a miss (aligned): the default chunk size. */
  windowBytes: 64 * 1024,
  /** Windows remembered (a direct-mapped table: a colliding window replaces the older one). */
  remembered: 65536,
  /** The decision is taken again after this many reads... */
  judgeEvery: 1024,
  /** ...once this many windows were read whole (the reuse rate is underestimated before)... */
  minRemembered: 8192,
  /** ...and read-around stays on while at least 1 read in this many falls in a remembered window. */
  readsPerReuse: 32,
  /** While off, it is on again for one judging period in this many. */
  retryEvery: 16,
  /** Scratch windows kept for reuse (one per read in flight; more are allocated and dropped). */
  spareWindows: 64,
} as const;

/** What to do with a small read that would go to the pool. */
export const ReadPlan = { Cached: 0, Around: 1, Exact: 2 } as const;
export type ReadPlan = (typeof ReadPlan)[keyof typeof ReadPlan];

/** One instance for the process, like the page cache it models. */
export class ReadAroundRule {
  on = true;
  private readonly table = new Float64Array(READ_AROUND.remembered).fill(-1);
  private filled = 0;
  private reads = 0;
  private reuse = 0;
  private offPeriods = 0;

  /** The plan for a read of file `fileId` at `pos` that fits in one window. */
  plan(fileId: number, pos: number): ReadPlan {
    const key = windowKey(fileId, pos);
    const known = this.table[slotOf(key)] === key;
    if (known) this.reuse++;
    if (++this.reads === READ_AROUND.judgeEvery) this.judge();
    return known ? ReadPlan.Cached : this.on ? ReadPlan.Around : ReadPlan.Exact;
  }

  /** After a slow synchronous read at `pos` (no plan was asked): whether to fetch its window now. */
  prefetch(fileId: number, pos: number): boolean {
    const key = windowKey(fileId, pos);
    return this.on && this.table[slotOf(key)] !== key;
  }

  /** The window around `pos` was read whole. */
  remember(fileId: number, pos: number): void {
    const key = windowKey(fileId, pos);
    this.table[slotOf(key)] = key;
    if (this.filled < READ_AROUND.minRemembered) this.filled++;
  }

  /** A read in a remembered window was slow: the page cache dropped it. */
  forget(fileId: number, pos: number): void {
    const key = windowKey(fileId, pos);
    if (this.table[slotOf(key)] === key) this.table[slotOf(key)] = -1;
  }

  private judge(): void {
    if (this.on) {
      if (this.filled === READ_AROUND.minRemembered) this.on = this.reuse * READ_AROUND.readsPerReuse >= this.reads;
    } else if (++this.offPeriods === READ_AROUND.retryEvery - 1) {
      this.on = true;
      this.offPeriods = 0;
    }
    this.reads = 0;
    this.reuse = 0;
  }
}

/** Byte offset of the window that holds `pos`. */
export function windowStart(pos: number): number {
  return pos - (pos % READ_AROUND.windowBytes);
}

function windowKey(fileId: number, pos: number): number {
  return fileId * 2 ** 32 + windowStart(pos) / READ_AROUND.windowBytes;
}

function slotOf(key: number): number {
  // Neighbouring windows of one file land in neighbouring slots; the file id spreads files.
  return (key + Math.floor(key / 2 ** 32) * 0x9e37) % READ_AROUND.remembered;
}

export const readAround = new ReadAroundRule();

/** Where Linux counts the bytes a process had read from storage devices (not the page cache). */
const PROC_IO = '/proc/self/io';
const READ_BYTES = /read_bytes: (\d+)/;
/** /proc/self/io is seven short lines (~100 bytes). */
const PROC_IO_MAX_BYTES = 512;

/**
 * Whether the process read anything from the disk since the last look. A slow synchronous read
 * with no disk read meanwhile was served by the page cache (the thread was preempted or
 * interrupted): counting it as a miss sent hot reads to the pool (as 64 KiB window reads) and
 * fetched windows for nothing, a few % of a hot random read's reads on a busy machine
 * (bench/README.md, issue 11). Asked only after a slow read; where the count cannot be read,
 * every slow read passes for a miss. The file stays open and each look is one pread at 0 (procfs
 * makes the text afresh): opening it each time (open, statx, two reads, close) cost ~22 µs a
 * look against ~3, and under load a TLS random read looked after most reads (bench/README.md,
 * "TLS: the reply queue's high-water mark, and the disk-read look").
 */
export class DiskReads {
  private readonly fd: number;
  private readonly text = Buffer.allocUnsafe(PROC_IO_MAX_BYTES);
  /** The count at the last look (the first at construction), -1 when unreadable. */
  private last: number;
  constructor(path: string = PROC_IO) {
    let fd = -1;
    try {
      fd = openSync(path, 'r');
    } catch {
      // unreadable: every slow read passes for a miss
    }
    this.fd = fd;
    this.last = this.readBytes();
  }

  grew(): boolean {
    const now = this.readBytes();
    if (now < 0) return true;
    const grew = now !== this.last;
    this.last = now;
    return grew;
  }

  private readBytes(): number {
    if (this.fd < 0) return -1;
    try {
      const n = readSync(this.fd, this.text, 0, this.text.length, 0);
      const m = READ_BYTES.exec(this.text.toString('latin1', 0, n));
      return m ? Number(m[1]) : -1;
    } catch {
      return -1;
    }
  }
}

export const diskReads = new DiskReads();

const spare: Buffer[] = [];

/** A window-sized scratch buffer; give it back with `releaseWindow`. */
export function takeWindow(): Buffer {
  return spare.pop() ?? Buffer.allocUnsafe(READ_AROUND.windowBytes);
}

export function releaseWindow(b: Buffer): void {
  if (spare.length < READ_AROUND.spareWindows) spare.push(b);
}

/** File ids for the rule's keys (wrapping only blurs the estimate). */
let nextFileId = 0;
export function newFileId(): number {
  nextFileId = (nextFileId + 1) & 0xfffff;
  return nextFileId;
}
