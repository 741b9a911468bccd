// A small seeded PRNG (mulberry32) for property and fuzz tests: no dependency, reproducible.
// Seeded tests run a fixed set of seeds plus one fresh seed (printed), see runSeeds; every
// seeded test prints its seed when it fails; rerun one with SNAPNBD_SEED=<seed>.

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

/** The run's seed: SNAPNBD_SEED when set (to replay a failure), else a fresh one. */
export function testSeed(): number {
  const env = process.env.SNAPNBD_SEED;
  if (env !== undefined && env !== '') return Number(env) >>> 0;
  return (Date.now() ^ (Math.random() * 2 ** 32)) >>> 0;
}

/**
 * Runs `body` with a seeded PRNG; on failure the error names the seed, so the case can be
 * replayed with SNAPNBD_SEED=<seed>.
 */
export async function withSeed<T>(label: string, body: (rng: Prng) => T | Promise<T>, seed = testSeed()): Promise<T> {
  try {
    return await body(new Prng(seed));
  } catch (e) {
    const msg = `${label}: failed with seed ${seed} (replay: SNAPNBD_SEED=${seed})`;
    console.error(msg);
    if (e instanceof Error) e.message = `${msg}\n${e.message}`;
    throw e;
  }
}

/** The seeds every CI run replays, so a green run means the same thing twice. */
export const FIXED_SEEDS: readonly number[] = [1, 2, 3];

/**
 * The seeds of one run: `fixed` (the same in every run) plus one fresh seed, printed so a red run
 * can be replayed; SNAPNBD_SEED=<seed> runs that one seed alone.
 */
export function runSeeds(label: string, fixed: readonly number[] = FIXED_SEEDS): { seed: number; fresh: boolean }[] {
  const env = process.env.SNAPNBD_SEED;
  if (env !== undefined && env !== '') return [{ seed: Number(env) >>> 0, fresh: false }];
  const fresh = testSeed();
  console.log(`${label}: fixed seeds ${fixed.join(', ')} and fresh seed ${fresh} (replay: SNAPNBD_SEED=${fresh})`);
  return [...fixed.map((seed) => ({ seed, fresh: false })), { seed: fresh, fresh: true }];
}

/** withSeed over runSeeds(label): the fixed seeds, then the fresh one. */
export async function withSeeds(label: string, body: (rng: Prng, fresh: boolean) => void | Promise<void>, fixed?: readonly number[]): Promise<void> {
  for (const { seed, fresh } of runSeeds(label, fixed)) await withSeed(label, (rng) => body(rng, fresh), seed);
}
