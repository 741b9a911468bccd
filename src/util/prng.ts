// A small seeded PRNG (mulberry32): no dependency, reproducible. The simulated file system's
// crash decisions and every seeded test draw from it.

export class Prng {
  readonly seed: number;
  private s: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.s = this.seed;
  }

  /** Uniform in [0, 2^32). */
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** Uniform in [0, 1). */
  float(): number {
    return this.u32() / 2 ** 32;
  }

  /** Integer in [lo, hi] (inclusive), hi - lo < 2^32. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }

  /** Integer in [0, 2^53). */
  u53(): number {
    return (this.u32() & 0x1fffff) * 2 ** 32 + this.u32();
  }

  bool(pTrue = 0.5): boolean {
    return this.float() < pTrue;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(0, items.length - 1)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b.writeUInt8(this.u32() & 0xff, i);
    return b;
  }

  /** A printable ASCII string of length in [0, maxLen]. */
  ascii(maxLen: number): string {
    let s = '';
    const n = this.int(0, maxLen);
    for (let i = 0; i < n; i++) s += String.fromCharCode(this.int(0x20, 0x7e));
    return s;
  }
}
