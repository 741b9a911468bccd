// Seeds for property and fuzz tests (the generator is src/util/prng.ts).
// Every seeded test prints its seed when it fails; rerun one with SNAPNBD_SEED=<seed>.
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
