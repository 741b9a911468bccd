// Builds the memory-full scenario's store fast (bench/README.md "memory-full"): a volume whose
// every chunk maps its own slot, made at the engine level (map entries and slot counts set
// directly, then one checkpoint) instead of writing a TiB through NBD. No data is written: the
// segment files stay absent, which the maps never look at; what the server then holds in memory
// (maps, slot tables, space counters) is what a fully written volume makes it hold.
//   node --import tsx bench/fill-store.ts DATA_DIR VOLUME_BYTES [NAME]
import { openCowStore } from '../src/storage/index.ts';

const CHUNK_SIZE = 65536;

async function main(): Promise<void> {
  const [dir, bytesArg, name = 'full'] = process.argv.slice(2);
  if (!dir || !bytesArg) throw new Error('usage: fill-store.ts DATA_DIR VOLUME_BYTES [NAME]');
  const size = Number(bytesArg);
  const t0 = performance.now();
  const store = await openCowStore(dir, { commitIntervalMs: 0 });
  store.autoCompact = false;
  await store.createVolume({ name, size, chunkSize: CHUNK_SIZE });
  const state = store.inspect();
  const head = state.volume(name)!.head;
  const cls = state.chunkClass(CHUNK_SIZE);
  const chunks = Math.ceil(size / CHUNK_SIZE);
  // Birth 1: the store's first epoch (no snapshot yet).
  for (let c = 0; c < chunks; c++) head.map.set(c, cls.alloc(), 1);
  const mapped = performance.now();
  await store.checkpoint();
  await store.close();
  process.stdout.write(`${JSON.stringify({ chunks, mapMs: Math.round(mapped - t0), totalMs: Math.round(performance.now() - t0) })}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`fill-store: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
