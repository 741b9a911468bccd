// A checkpoint's swap with many partial slots (chains make one per chunk per snapshot it was
// written in since): how long the plan's constructor holds the event loop (the swap is one turn),
// and how long encoding every SlotValid record takes in all (the writer does it piece by piece,
// yielding between slices: record-pieces.ts). The plan is built over a partial-slot table of N
// entries alone (no volumes: the pages are measured by control-full.ts).
// Run: node --import tsx bench/micro/checkpoint-partials.ts [--partials 200000] [--rounds 5]
import { parseArgs } from 'node:util';
import type { Catalog } from '../../src/storage/catalog.ts';
import { CheckpointPlan } from '../../src/storage/checkpoint.ts';
import type { DataStore } from '../../src/storage/chunk-store.ts';
import { emptyBits, markValid, PartialSlots } from '../../src/storage/partial-slots.ts';

const CHUNK = 65536;
const { values } = parseArgs({ options: { partials: { type: 'string' }, rounds: { type: 'string' } } });
const N = Number(values.partials ?? 200_000);
const ROUNDS = Number(values.rounds ?? 5);

const partials = new PartialSlots({ ref: () => {}, unref: () => {} });
for (let s = 0; s < N; s++) {
  const bits = emptyBits(CHUNK);
  markValid(bits, (s % 16) * 4096, 4096);
  partials.set(2 * s + 1, 2 * s, bits); // each over a whole slot of its own: a chain's depth does not matter here
}
const catalog = { epoch: 1, nextId: 1, volumes: () => [][Symbol.iterator](), allNodes: () => [] } as unknown as Catalog;
const chunks = { classes: new Map([[16, { chunkSize: CHUNK, partials, freedButPinned: () => new Set() }]]) } as unknown as DataStore;

const ms = (t: bigint): number => Number(process.hrtime.bigint() - t) / 1e6;
for (let r = 0; r < ROUNDS; r++) {
  const t0 = process.hrtime.bigint();
  const plan = new CheckpointPlan(catalog, chunks);
  const swap = ms(t0);
  const t1 = process.hrtime.bigint();
  let bytes = 0;
  for (const rec of plan.records()) bytes += rec.length;
  const encode = ms(t1);
  plan.release();
  console.log(`${N} partial slots: swap (one turn) ${swap.toFixed(1)} ms; encoding the records ${encode.toFixed(1)} ms in all, ${(bytes / 2 ** 20).toFixed(1)} MiB`);
}
