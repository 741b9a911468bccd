// Storage engine numbers for src/storage/README.md: snapshot create time at 1 GiB and 1 TiB
// sparse volumes, empty and with data; open (recovery) time; space reclaimed by trim + delete.
// Run: node --import tsx bench/micro/storage-snapshot.ts
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCowStore } from '../../src/storage/index.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

async function snapshotTimes(dir: string, size: number, dataBytes: number): Promise<{ firstMs: number; medianMs: number }> {
  const s = await openCowStore(dir, { commitIntervalMs: 0 });
  await s.createVolume({ name: 'v', size });
  const dev = s.head('v');
  const buf = Buffer.alloc(MiB, 0xab);
  // Data spread over the whole volume (so many map pages are in use).
  const n = dataBytes / MiB;
  for (let i = 0; i < n; i++) await dev.write(Math.floor((size / n) * i / MiB) * MiB, buf, { fua: false });
  await s.flush();
  const times: number[] = [];
  for (let i = 0; i < 21; i++) {
    await dev.write(0, buf.subarray(0, 4096), { fua: false }); // a write between snapshots
    const t0 = process.hrtime.bigint();
    await s.createSnapshot('v', `s${i}`);
    times.push(ms(t0));
  }
  await s.close();
  const sorted = [...times].sort((a, b) => a - b);
  return { firstMs: times[0]!, medianMs: sorted[10]! };
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'snapnbd-bench-'));
  try {
    const rows: string[] = [];
    for (const [label, size] of [['1 GiB', GiB], ['1 TiB', 1024 * GiB]] as const) {
      for (const data of [0, 256 * MiB]) {
        const d = join(root, `${label.replace(' ', '')}-${data}`);
        const r = await snapshotTimes(d, size, data);
        rows.push(`snapshot create, ${label} volume, ${data / MiB} MiB data: first ${r.firstMs.toFixed(2)} ms, median of 21 ${r.medianMs.toFixed(2)} ms`);
        await rm(d, { recursive: true, force: true });
      }
    }
    // Recovery: open after many small committed transactions (log replay) and after a checkpoint.
    const d = join(root, 'recovery');
    let s = await openCowStore(d, { commitIntervalMs: 0 });
    await s.createVolume({ name: 'v', size: 64 * GiB });
    const dev = s.head('v');
    const buf = Buffer.alloc(65536, 1);
    for (let i = 0; i < 20000; i++) {
      await dev.write(((i * 7919) % 1048576) * 65536, buf, { fua: false });
      if (i % 10 === 0) await s.flush();
    }
    for (let i = 0; i < 100; i++) await s.createSnapshot('v', `s${i}`);
    await s.flush();
    const journal = s.inspect().journalEnd;
    s.abandon();
    let t0 = process.hrtime.bigint();
    s = await openCowStore(d, { commitIntervalMs: 0 });
    rows.push(`open (recovery) after 20000 writes in 2000 commits + 100 snapshots, ${(journal / MiB).toFixed(1)} MiB journal: ${ms(t0).toFixed(1)} ms`);
    await s.checkpoint();
    await s.close();
    t0 = process.hrtime.bigint();
    s = await openCowStore(d, { commitIntervalMs: 0 });
    rows.push(`open from a checkpoint (${(s.inspect().checkpointLen / MiB).toFixed(1)} MiB): ${ms(t0).toFixed(1)} ms`);
    // Space: fill 512 MiB, snapshot, trim all, delete the snapshot.
    await s.deleteVolume('v');
    await s.flush();
    await s.settle();
    await s.createVolume({ name: 'w', size: GiB });
    const w = s.head('w');
    const big = Buffer.alloc(MiB, 7);
    for (let off = 0; off < 512 * MiB; off += MiB) await w.write(off, big, { fua: false });
    await s.flush();
    const full = s.stats().allocatedBytes;
    await s.createSnapshot('w', 'keep');
    await w.trim(0, 512 * MiB, { fua: false });
    await s.flush();
    await s.settle();
    const withSnap = s.stats().allocatedBytes;
    t0 = process.hrtime.bigint();
    await s.deleteSnapshot('w', 'keep');
    const delMs = ms(t0);
    await s.flush();
    await s.settle();
    const after = s.stats().allocatedBytes;
    rows.push(`space: 512 MiB written -> ${(full / MiB).toFixed(1)} MiB allocated; trimmed with a snapshot holding it -> ${(withSnap / MiB).toFixed(1)} MiB; snapshot deleted (${delMs.toFixed(1)} ms) -> ${(after / MiB).toFixed(2)} MiB`);
    await s.close();
    for (const r of rows) console.log(r);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

void main();
