// Data compaction numbers for src/storage/README.md: bytes given back to the file system when
// free slots are scattered through the middle of segment files, and what a client writing all
// along sees (the longest write, against the same writer without compaction).
// Run: node --import tsx bench/micro/storage-compact.ts [volume MiB, default 1024]
import { readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { openCowStore } from '../../src/storage/index.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import type { BlockDevice } from '../../src/storage/device.ts';

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
/** Concurrent 4 KiB random writes of the client running alongside, and its flush period. */
const QUEUE_DEPTH = 4;
const WRITE_LEN = 4096;
const FLUSH_EVERY = 256;
const BASELINE_MS = 2000;

const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

function blocksUnder(d: string): number {
  let n = 0;
  for (const name of readdirSync(d)) n += statSync(join(d, name)).blocks * 512;
  return n;
}

/** Random 4 KiB writes at QUEUE_DEPTH until stop(); latencies in ms. */
function writer(s: CowStore, dev: BlockDevice, size: number): { stop: () => Promise<number[]> } {
  let running = true;
  const lat: number[] = [];
  let x = 12345;
  let n = 0;
  const buf = Buffer.alloc(WRITE_LEN, 0x5a);
  const lane = async (): Promise<void> => {
    while (running) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const off = (x % (size / WRITE_LEN)) * WRITE_LEN;
      const t0 = process.hrtime.bigint();
      await dev.write(off, buf, { fua: false });
      lat.push(ms(t0));
      if (++n % FLUSH_EVERY === 0) await s.flush();
      // Cached writes complete synchronously: let the event loop (and the compactor) run.
      await new Promise((r) => setImmediate(r));
    }
  };
  const lanes = Array.from({ length: QUEUE_DEPTH }, lane);
  return {
    stop: async () => {
      running = false;
      await Promise.all(lanes);
      return lat;
    },
  };
}

function summary(lat: number[]): string {
  const sorted = [...lat].sort((a, b) => a - b);
  const p = (q: number): string => (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(2);
  return `${lat.length} writes, p99 ${p(0.99)} ms, max ${p(1)} ms`;
}

async function main(): Promise<void> {
  const volMiB = Number(process.argv[2] ?? 1024);
  const size = volMiB * MiB;
  const root = await mkdtemp(join(tmpdir(), 'snapnbd-bench-compact-'));
  const d = join(root, 'store');
  try {
    const s = await openCowStore(d, { commitIntervalMs: 5000 });
    s.autoCompact = false; // the bench runs it explicitly, with the writer going
    await s.createVolume({ name: 'v', size, chunkSize: CHUNK });
    const dev = s.head('v');
    // Fill, snapshot, rewrite 3 chunks of every 4, delete the snapshot: the filled segments keep
    // every 4th chunk, the rest of them are free holes the file system still holds.
    const big = Buffer.alloc(MiB, 0xab);
    for (let off = 0; off < size; off += MiB) await dev.write(off, big, { fua: false });
    await s.createSnapshot('v', 'old');
    const chunk = Buffer.alloc(3 * CHUNK, 0xcd);
    for (let off = 0; off < size; off += 4 * CHUNK) await dev.write(off + CHUNK, chunk, { fua: false });
    await s.deleteSnapshot('v', 'old');
    await s.flush();
    await s.settle();
    const before = blocksUnder(d);
    const live = s.stats().liveBytes;

    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    const base = writer(s, dev, size);
    await new Promise((r) => setTimeout(r, BASELINE_MS));
    const baseLat = await base.stop();
    const baseLoopMs = loop.max / 1e6;
    loop.reset();

    const w = writer(s, dev, size);
    const t0 = process.hrtime.bigint();
    const st = await s.compact();
    const took = ms(t0);
    const during = await w.stop();
    const loopMs = loop.max / 1e6;
    loop.disable();
    await s.flush();
    await s.settle();
    const after = blocksUnder(d);
    await s.close();
    const rows = [
      `compaction, ${volMiB} MiB volume of 64 KiB chunks in 64 MiB segments, 1/4 of each filled segment live:`,
      `  st_blocks ${(before / MiB).toFixed(1)} MiB -> ${(after / MiB).toFixed(1)} MiB (live ${(live / MiB).toFixed(1)} MiB): ` +
        `${((before - after) / MiB).toFixed(1)} MiB given back in ${took.toFixed(0)} ms`,
      `  ${st.segments} segments emptied, ${(st.bytesMoved / MiB).toFixed(1)} MiB copied, writes held at most ${st.maxHoldMs.toFixed(2)} ms`,
      `  4 KiB random writes at QD ${QUEUE_DEPTH} alongside: ${summary(during)}; longest event-loop block ${loopMs.toFixed(1)} ms`,
      `  the same writer without compaction:       ${summary(baseLat)}; longest event-loop block ${baseLoopMs.toFixed(1)} ms`,
    ];
    console.log(rows.join('\n'));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

void main();
