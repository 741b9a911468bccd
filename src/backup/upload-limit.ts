// A target's `upload-limit`: puts are paced so that, over any window longer than a burst, the
// bytes sent stay within the rate (an offsite link is shared with everything else on the host).
// Reads are not paced: a restore wants every byte it can get. Small puts (in-progress markers,
// the collector's lock, a short manifest) are counted but never wait: they must not queue behind
// the blocks, or a heartbeat would go stale behind minutes of bookings.
import { setTimeout as sleep } from 'node:timers/promises';
import type { ObjectEntry, ObjectStore } from './target.ts';

/** Credit an idle target keeps: this much of the rate's time may be sent at once after a pause. */
export const UPLOAD_BURST_MS = 250;
/** Puts up to this long are counted against the rate but sent at once. */
export const UPLOAD_UNPACED_MAX = 64 * 1024;

/** When each put may start: a virtual clock that runs ahead by what was sent at the rate. */
export class UploadPacer {
  private readonly bytesPerMs: number;
  private next = -Infinity;

  constructor(bytesPerSecond: number) {
    this.bytesPerMs = bytesPerSecond / 1000;
  }

  /** Books `bytes` at `now` (ms); answers how long to wait before sending them. */
  reserve(bytes: number, now: number): number {
    this.next = Math.max(this.next, now - UPLOAD_BURST_MS) + bytes / this.bytesPerMs;
    return Math.max(0, this.next - now);
  }

  /** Gives back a booking whose bytes were never sent (a cancelled put). */
  refund(bytes: number): void {
    this.next -= bytes / this.bytesPerMs;
  }
}

/** `inner` with its puts paced by `pacer` (null: `inner` itself, no limit). */
export function limitUploads(inner: ObjectStore, pacer: UploadPacer | null): ObjectStore {
  if (pacer === null) return inner;
  return {
    get display() {
      return inner.display;
    },
    async put(key: string, data: Buffer, signal?: AbortSignal, sha256?: string): Promise<void> {
      const wait = pacer.reserve(data.length, performance.now());
      if (wait > 0 && data.length > UPLOAD_UNPACED_MAX) {
        try {
          await sleep(wait, undefined, signal ? { signal } : {});
        } catch (e) {
          pacer.refund(data.length);
          throw e;
        }
      }
      return inner.put(key, data, signal, sha256);
    },
    get: (key: string, signal?: AbortSignal, into?: Buffer) => inner.get(key, signal, into),
    exists: (key: string, signal?: AbortSignal) => inner.exists(key, signal),
    delete: (key: string) => inner.delete(key),
    list: (prefix: string): AsyncIterable<ObjectEntry> => inner.list(prefix),
    check: () => inner.check(),
    close: () => inner.close(),
  };
}
