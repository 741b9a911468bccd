// Seeds for property and fuzz tests (the generator is src/util/prng.ts).
// Seeded tests run a fixed set of seeds plus one fresh seed (printed), see runSeeds; every
// seeded test prints its seed when it fails; rerun one with SNAPNBD_SEED=<seed>.
import { Prng } from '../../src/util/prng.ts';

export { Prng };

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
