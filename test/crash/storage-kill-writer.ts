// Child process for the kill -9 test: opens the store in argv[2], then writes 4 KiB blocks with
// self-describing content forever, flushing every few writes. Prints `W <block> <counter>` once a
// write resolved (`U ...` for a FUA write; after `I <block> <counter>`/`Z ...` when it was issued),
// `F <counter>` once a flush covering every write up to <counter> resolved, `S <name>` once a
// snapshot create resolved (it holds every write up to the counter in its name), `X`/`D <name>`
// when a snapshot delete was issued/resolved.
// Block content: u32 magic, u32 block index, u32 counter, then bytes derived from the counter.
import { writeSync } from 'node:fs';
import { openStore } from '../../src/storage/index.ts';

// Synchronous: a line written before SIGKILL is in the pipe, never lost in a stream buffer.
// A pipe the parent reads slowly may be full (EAGAIN on a non-blocking stdout): try again.
const say = (line: string): void => {
  const b = Buffer.from(line + '\n');
  for (let off = 0; off < b.length;) {
    try {
      off += writeSync(1, b, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
    }
  }
};

export const BLOCK = 4096;
export const BLOCKS = 1024;
export const MAGIC = 0x5eedb10c;

export function blockContent(block: number, counter: number): Buffer {
  const b = Buffer.alloc(BLOCK, (counter * 31 + block) & 0xff);
  b.writeUInt32LE(MAGIC, 0);
  b.writeUInt32LE(block, 4);
  b.writeUInt32LE(counter, 8);
  return b;
}

async function main(): Promise<void> {
  const dir = process.argv[2]!;
  let counter = Number(process.argv[3]);
  const seed = Number(process.argv[4]);
  let x = seed >>> 0 || 1;
  const rnd = (n: number): number => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x % n;
  };
  const store = await openStore(dir, { commitIntervalMs: 50 });
  if (store.listVolumes().length === 0) await store.createVolume({ name: 'v', size: BLOCK * BLOCKS, chunkSize: 16384 });
  const dev = store.head('v');
  say('ready');
  for (;;) {
    const batch: Promise<void>[] = [];
    const n = 1 + rnd(8);
    const inBatch = new Set<number>(); // concurrent writes to one block have no defined order
    for (let i = 0; i < n; i++) {
      const block = rnd(BLOCKS);
      if (inBatch.has(block)) continue;
      inBatch.add(block);
      const c = ++counter;
      if (rnd(10) === 0) {
        say(`Z ${block} ${c}`);
        batch.push(dev.trim(block * BLOCK, BLOCK, { fua: false }).then(() => say(`T ${block} ${c}`)));
      } else {
        const fua = rnd(20) === 0;
        say(`I ${block} ${c}`);
        batch.push(dev.write(block * BLOCK, blockContent(block, c), { fua }).then(() => say(`${fua ? 'U' : 'W'} ${block} ${c}`)));
      }
    }
    await Promise.all(batch);
    if (rnd(3) === 0) {
      const upTo = counter;
      await dev.flush();
      say(`F ${upTo}`);
    }
    if (rnd(50) === 0) {
      const name = `s${counter}`;
      await store.createSnapshot('v', name);
      say(`S ${name}`);
    }
    const snaps = store.listSnapshots('v');
    if (snaps.length > 4) {
      say(`X ${snaps[0]!.name}`); // delete issued: until `D`, the snapshot may or may not survive
      await store.deleteSnapshot('v', snaps[0]!.name);
      say(`D ${snaps[0]!.name}`);
    }
  }
}

if (process.argv[2]) void main();
