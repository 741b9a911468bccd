// WriteBehind: a restore's writes run behind its fetches, bounded, with flushes in the background.
import { describe, expect, it } from 'vitest';
import type { BlockDevice } from '../../src/storage/device.ts';
import { WriteBehind } from '../../src/backup/write-behind.ts';

/** A device whose writes wait until released; it records what landed and when flushes ran. */
class GatedDevice {
  readonly mem = Buffer.alloc(64 * 1024);
  readonly waiting: { off: number; data: Buffer; release: (e?: Error) => void }[] = [];
  readonly log: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  write(off: number, data: Buffer): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise((resolve, reject) => {
      this.waiting.push({
        off, data, release: (e?: Error) => {
          this.inFlight--;
          if (e) { reject(e); return; }
          data.copy(this.mem, off);
          this.log.push(`write ${off}`);
          resolve();
        },
      });
    });
  }
  flush(): Promise<void> {
    this.log.push('flush');
    return Promise.resolve();
  }
  releaseAll(): void {
    for (const w of this.waiting.splice(0)) w.release();
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('WriteBehind', () => {
  it('keeps at most writesMax writes in flight, calls landed after each, flushes every N bytes and at the end', async () => {
    const dev = new GatedDevice();
    const w = new WriteBehind(dev as unknown as BlockDevice, 2, 2048);
    const landed: number[] = [];
    const starts: Promise<void>[] = [];
    for (let i = 0; i < 6; i++) {
      const data = Buffer.alloc(1024, i + 1);
      let started = false;
      const p = w.write(i * 1024, data, () => landed.push(i)).then(() => { started = true; });
      await tick();
      // The first write returns at once; the second fills the window and waits for a slot.
      if (i === 0) expect(started).toBe(true);
      if (i === 1) expect(started).toBe(false);
      if (i >= 1) {
        expect(landed.length).toBe(i - 1);
        dev.waiting.shift()!.release();
        await p;
      }
      starts.push(p);
    }
    expect(dev.maxInFlight).toBe(2);
    dev.releaseAll();
    await w.finish();
    expect(landed).toEqual([0, 1, 2, 3, 4, 5]);
    for (let i = 0; i < 6; i++) expect(dev.mem[i * 1024]).toBe(i + 1);
    // A flush in the background after each 2 KiB landed, and the last one after every write.
    expect(dev.log.filter((l) => l === 'flush').length).toBeGreaterThanOrEqual(3);
    expect(dev.log.at(-1)).toBe('flush');
    expect(dev.log.indexOf('flush')).toBe(2); // not before 2048 bytes had landed
  });

  it('a failed write is thrown by the next write or by finish, and settle waits for the others', async () => {
    const dev = new GatedDevice();
    const w = new WriteBehind(dev as unknown as BlockDevice, 4, 1 << 30);
    const landed: number[] = [];
    await w.write(0, Buffer.alloc(512, 1), () => landed.push(0));
    await w.write(512, Buffer.alloc(512, 2), () => landed.push(1));
    dev.waiting[0]!.release(new Error('ENOSPC: disk full'));
    await tick();
    await expect(w.write(1024, Buffer.alloc(512, 3), () => landed.push(2))).rejects.toThrow(/ENOSPC/);
    let settled = false;
    const s = w.settle().then(() => { settled = true; });
    await tick();
    expect(settled).toBe(false); // the second write still runs
    dev.releaseAll();
    await s;
    await expect(w.finish()).rejects.toThrow(/ENOSPC/);
    expect(landed).toEqual([1]);
    expect(dev.log).not.toContain('flush'); // a failed restore is not flushed as if whole
  });
});
