// Seeded random model test of the storage engine against plain Buffers (see storage-model.ts).
// Fixed seeds plus one fresh seed per run (printed); replay a failure with
// SEED=<seed> npx vitest run test/property/storage-model.test.ts
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, expect } from 'vitest';
import { realFileIo } from '../../src/storage/file-io.ts';
import { Harness, runCheckOn, sha } from './storage-model.ts';

const FRESH = Math.floor(Math.random() * 2 ** 31);
const SEEDS = process.env['SEED'] ? [Number(process.env['SEED'])] : [1, 2, 3, 4, FRESH];
if (!process.env['SEED']) console.log(`storage model: seeds 1-4 and fresh seed ${FRESH} (replay: SEED=${FRESH})`);
const OPS = Number(process.env['OPS'] ?? 1500);

async function withSeed(seed: number, h: Harness, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (e) {
    console.error(`storage model failed: SEED=${seed}; last ops:\n  ${h.log.slice(-15).join('\n  ')}`);
    throw e;
  }
}

describe('storage engine vs in-memory model (simulated file system)', () => {
  for (const seed of SEEDS) {
    it(`seed ${seed}: ${OPS} random operations incl. crashes`, async () => {
      const h = new Harness({ seed, ops: OPS, midOpCrashProbability: 0.01 });
      await withSeed(seed, h, async () => {
        await h.setupSim();
        const before = sha(h.sim!.files.get('/backing.img')!.cur);
        await h.run();
        expect(h.compacted, 'segments emptied by compact operations').toBeGreaterThan(0);
        expect(h.partialsMax, 'partial slots made by block-aligned writes after snapshots').toBeGreaterThan(0);
        expect(h.backingPartialsMax, 'partial slots over the backing file made by block-aligned first writes').toBeGreaterThan(0);
        // Power losses happened, some of them in the middle of an operation.
        expect(h.crashes.length, 'power losses in the middle of an operation').toBeGreaterThan(0);
        expect(h.powerLosses, 'power losses').toBeGreaterThan(h.crashes.length);
        await runCheckOn(h);
        expect(sha(h.sim!.files.get('/backing.img')!.cur)).toBe(before);
      });
    });
  }
});

describe('storage engine vs in-memory model, with volume resizes', () => {
  const seeds = process.env['SEED'] ? [Number(process.env['SEED'])] : [31, FRESH];
  const ops = Math.min(OPS, 700); // heads grow to 4 MiB: each verification reads more
  for (const seed of seeds) {
    it(`seed ${seed}: ${ops} random operations incl. grows, shrinks and crashes`, async () => {
      const h = new Harness({ seed, ops, midOpCrashProbability: 0.02, resizeProbability: 0.06 });
      await withSeed(seed, h, async () => {
        await h.setupSim();
        await h.run();
        console.log(`seed ${seed}: ${h.resizes} resizes, ${h.resizesRefused} refused, crashes cut ${h.crashedOps.join('; ')}`);
        // A fresh seed may meet many volumes with snapshots (shrinks refused): 1792561351 made
        // 10 resizes and 28 refusals. What matters is that both paths ran.
        expect(h.resizes, 'resizes').toBeGreaterThan(3);
        expect(h.resizes + h.resizesRefused, 'resize attempts').toBeGreaterThan(10);
        expect(h.powerLosses, 'power losses').toBeGreaterThan(0);
        await runCheckOn(h);
      });
    });
  }
});

describe('storage engine vs in-memory model, with the file system running out of space', () => {
  const seeds = process.env['SEED'] ? [Number(process.env['SEED'])] : [6, 21, 22, 23, FRESH]; // 6 caught a zero whose failed tail lost its unmapped chunks
  for (const seed of seeds) {
    it(`seed ${seed}: ${OPS} random operations, squeezed to ENOSPC now and then`, async () => {
      const h = new Harness({ seed, ops: OPS, squeezeProbability: 0.03 });
      await withSeed(seed, h, async () => {
        await h.setupSim();
        await h.run();
        expect(h.noSpaceFailures, 'operations that failed with ENOSPC').toBeGreaterThan(0);
        await runCheckOn(h);
      });
    });
  }
});

describe('storage engine vs in-memory model (real files)', () => {
  it('seed 7 on a real directory', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapnbd-model-'));
    const seed = Number(process.env['SEED'] ?? 7);
    const h = new Harness({ seed, ops: Math.min(OPS, 800), io: realFileIo, dir: join(dir, 'store') });
    try {
      await withSeed(seed, h, async () => {
        await h.setup(join(dir, 'backing.img'), (p, b) => writeFile(p, b));
        const before = sha(await readFile(join(dir, 'backing.img')));
        await h.run();
        await runCheckOn(h);
        expect(sha(await readFile(join(dir, 'backing.img')))).toBe(before);
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
