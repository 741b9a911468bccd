// Where the memory-full scenario's bytes are, in process (issue 15, bench/README.md "memory-full"):
// the store of bench/fill-store.ts (every chunk of VOLUME mapped), opened here, then SNAPSHOTS
// snapshots each after REWRITE random 64 KiB writes through the head (the bench row's 10 MiB =
// 160 writes). Prints process.memoryUsage() and VmRSS/VmHWM after open and at the end (after a
// GC when run with --expose-gc), and the map's pages and L1s counted by walking every node.
//   node --expose-gc --import tsx bench/micro/memory-full.ts [--gib 1024] [--snapshots 100] [--rewrite 160] [--store DIR]
// --store DIR: a store fill-store.ts built (copied to a temp dir first, so it can be reused).
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openCowStore } from '../../src/storage/index.ts';

const CHUNK = 65536;
const MiB = 2 ** 20;
const { values } = parseArgs({ options: { gib: { type: 'string' }, snapshots: { type: 'string' }, rewrite: { type: 'string' }, store: { type: 'string' } } });
const GIB = Number(values.gib ?? 1024);
const SNAPSHOTS = Number(values.snapshots ?? 100);
const REWRITE = Number(values.rewrite ?? 160);

function status(): string {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string): number => Number(/\d+/.exec(s.split('\n').find((l) => l.startsWith(k)) ?? '0')![0]) / 1024;
  return `VmRSS ${kb('VmRSS:').toFixed(1)} MiB, VmHWM ${kb('VmHWM:').toFixed(1)} MiB`;
}

function usage(label: string): void {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  const f = (n: number): string => (n / MiB).toFixed(1);
  console.log(`${label}: ${status()}; heapUsed ${f(m.heapUsed)} / heapTotal ${f(m.heapTotal)}, external ${f(m.external)}, arrayBuffers ${f(m.arrayBuffers)} MiB`);
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'snapnbd-mf-'));
  const dir = join(root, 's');
  try {
    if (values.store) cpSync(values.store, dir, { recursive: true });
    else execFileSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'fill-store.ts'), dir, String(GIB * 2 ** 30), 'full'], { stdio: 'inherit' });
    usage('before open');
    const store = await openCowStore(dir, { commitIntervalMs: 0 });
    store.autoCompact = false;
    usage('opened');
    const chunks = GIB * 2 ** 30 / CHUNK;
    const dev = store.head('full');
    const buf = Buffer.alloc(CHUNK, 0x5a);
    let seed = 1;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
    for (let i = 0; i < SNAPSHOTS; i++) {
      for (let k = 0; k < REWRITE; k++) await dev.write(Math.floor(rand() * chunks) * CHUNK, buf, { fua: false });
      await store.createSnapshot('full', `m${i}`);
    }
    usage(`${SNAPSHOTS} snapshots`);
    const state = store.inspect();
    const pages = new Set<unknown>();
    const l1s = new Set<unknown>();
    for (const n of state.nodes) {
      l1s.add(n.map.l1);
      for (const p of n.map.l1.pages) if (p) pages.add(p);
    }
    console.log(`L1s ${l1s.size}, distinct pages ${pages.size}`);
    await store.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
