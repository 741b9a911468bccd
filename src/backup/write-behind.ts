// Write-behind for a restore. A fetched and checked block is written while the next GETs run:
// its write no longer holds one of the restore's fetch slots (under load a 1 MiB write took a
// fifth of a slot's time). At most `writesMax` writes are in flight, so memory stays bounded. Every
// `flushEveryBytes` written, a flush starts in the background: the volume goes to disk while the
// restore still downloads, instead of all of it in the last flush.
import type { BlockDevice } from '../storage/device.ts';

export const RESTORE_WRITES_MAX = 8;
export const RESTORE_FLUSH_EVERY_BYTES = 64 * 1024 * 1024;

export class WriteBehind {
  private readonly device: BlockDevice;
  private readonly writesMax: number;
  private readonly flushEveryBytes: number;
  private readonly inFlight = new Set<Promise<void>>();
  private flushing: Promise<void> | null = null;
  private sinceFlush = 0;
  private failed = false;
  private failure: unknown = null;

  constructor(device: BlockDevice, writesMax = RESTORE_WRITES_MAX, flushEveryBytes = RESTORE_FLUSH_EVERY_BYTES) {
    this.device = device;
    this.writesMax = Math.max(1, writesMax);
    this.flushEveryBytes = flushEveryBytes;
  }

  /**
   * Starts writing `data` at `offset`; resolves when another write may start. `landed` runs once
   * this write has landed (the caller then reuses `data`). Throws the first failure of any write.
   */
  async write(offset: number, data: Buffer, landed: () => void): Promise<void> {
    this.check();
    const len = data.length;
    const p: Promise<void> = this.device.write(offset, data, { fua: false }).then(() => {
      this.inFlight.delete(p);
      this.sinceFlush += len;
      landed();
      this.maybeFlush();
    }, (e: unknown) => {
      this.inFlight.delete(p);
      this.fail(e);
    });
    this.inFlight.add(p);
    while (this.inFlight.size >= this.writesMax) await Promise.race(this.inFlight);
    this.check();
  }

  /** Waits for every write and background flush, then flushes: all of it is durable. */
  async finish(): Promise<void> {
    await this.settle();
    this.check();
    await this.device.flush();
  }

  /** Waits until nothing this started still runs (after a failure elsewhere); throws nothing. */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0 || this.flushing !== null) {
      await Promise.all([...this.inFlight, this.flushing]);
    }
  }

  private maybeFlush(): void {
    if (this.sinceFlush < this.flushEveryBytes || this.flushing !== null || this.failed) return;
    this.sinceFlush = 0;
    this.flushing = this.device.flush().then(() => { this.flushing = null; }, (e: unknown) => {
      this.flushing = null;
      this.fail(e);
    });
  }

  private fail(e: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.failure = e;
  }

  private check(): void {
    if (this.failed) throw this.failure;
  }
}
