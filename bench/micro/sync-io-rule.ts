// The choice between synchronous writes and the thread pool (src/storage/file-io.ts
// SyncIoStrategy), replayed on a simulated clock for several builds side by side: what share of
// the writes each build sends to the pool (a pool write costs ~2x the CPU of a synchronous one
// the page cache absorbs, bench/README.md) and how many synchronous writes it lets stall the event
// loop, for a few patterns of stalls. Deterministic: no file, no load, the same answer every run.
// Each tree's dist/ (npm run build first).
//   node --import tsx bench/micro/sync-io-rule.ts [--trees DIR,DIR] [--iops 30000] [--seconds 10]
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values: v } = parseArgs({ options: { trees: { type: 'string' }, iops: { type: 'string' }, seconds: { type: 'string' } } });
const trees = (v.trees ?? join(import.meta.dirname, '..', '..')).split(',').map((t) => resolve(t));
const iops = Number(v.iops ?? 30_000);
const seconds = Number(v.seconds ?? 10);
const BLOCK = 4096;
/** A synchronous write the page cache absorbs. */
const FAST_NS = 5_000;
/** A stalled one (over the rule's 10 ms). */
const STALL_NS = 30_000_000;

interface Strategy { next(): boolean; record(ns: number, len: number): void }
type Make = (clock: () => number) => Strategy;

/** Whether a synchronous write at `ms` (since the start) would stall. */
type Pattern = (ms: number) => boolean;
const PATTERNS: [string, Pattern][] = [
  ['no stall', () => false],
  ['one stall a second (a commit, a preemption)', (ms) => ms % 1000 < 1],
  ['one stall every 5 s', (ms) => ms % 5000 < 1],
  ['throttled 300 ms of every second', (ms) => ms % 1000 < 300],
  ['throttled 3 s of every 5 s', (ms) => ms % 5000 < 3000],
  ['throttled all along', () => true],
];

function replay(make: Make, stalls: Pattern): { pool: number; stalled: number; blockedMs: number } {
  let now = 0; // ms
  const s = make(() => now);
  const gapMs = 1000 / iops;
  let pool = 0;
  let stalled = 0;
  let blockedMs = 0;
  const total = iops * seconds;
  for (let i = 0; i < total; i++) {
    if (!s.next()) {
      pool++;
      now += gapMs;
      continue;
    }
    const ns = stalls(now) ? STALL_NS : FAST_NS;
    s.record(ns, BLOCK);
    if (ns === STALL_NS) {
      stalled++;
      blockedMs += ns / 1e6;
      now += ns / 1e6; // the loop was held: nothing else ran meanwhile
    } else now += gapMs;
  }
  return { pool: pool / total, stalled, blockedMs };
}

const makers: [string, Make][] = [];
for (const t of trees) {
  // sync-io.js since the split; older builds kept the strategy in file-io.js.
  const m = (existsSync(join(t, 'dist/storage/sync-io.js')) ? await import(join(t, 'dist/storage/sync-io.js')) : await import(join(t, 'dist/storage/file-io.js'))) as { SyncIoStrategy: new (clock: () => number, isolatedStalls?: boolean) => Strategy };
  // The write rule: isolated stalls stay synchronous (a build without that argument ignores it).
  makers.push([basename(t), (clock) => new m.SyncIoStrategy(clock, true)]);
}
console.log(`${iops} writes/s for ${seconds} s; a stalled synchronous write takes ${STALL_NS / 1e6} ms, the others ${FAST_NS / 1e3} µs`);
console.log(`| stalls | ${makers.map(([n]) => `${n}: pool writes, stalled writes (loop held)`).join(' | ')} |`);
console.log(`|---|${makers.map(() => '---:').join('|')}|`);
for (const [name, p] of PATTERNS) {
  const cells = makers.map(([, make]) => {
    const r = replay(make, p);
    return `${(r.pool * 100).toFixed(1)} %, ${r.stalled} (${r.blockedMs} ms)`;
  });
  console.log(`| ${name} | ${cells.join(' | ')} |`);
}
