// First 4 KiB writes into 64 KiB chunks unmapped over the volume's backing image, in process (no
// NBD, no fio): CPU time per write, and bytes read and written per write, for one write into each
// of N random chunks (first writes), then the same writes again (rewrites, in place). A first
// write used to merge (64 KiB read from the backing file, a fresh 64 KiB buffer, a 64 KiB write);
// a partial slot over the backing file (src/storage/partial-slots.ts) writes the 4 KiB alone.
// CPU time per write is the figure that survives a busy machine.
// Run: node --import tsx bench/micro/first-writes-backing.ts [image MiB, default 512] [writes, default 4096] [reps, default 3]
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCowStore } from '../../src/storage/index.ts';

const MiB = 1024 * 1024;
const QD = 32;
const BLOCK = 4096;
const CHUNK = 64 * 1024;

function ioCounters(): { rchar: number; wchar: number } {
  const f = Object.fromEntries(readFileSync('/proc/self/io', 'utf8').trim().split('\n').map((l) => l.split(': ')).map(([k, v]) => [k, Number(v)]));
  return { rchar: f['rchar'] ?? 0, wchar: f['wchar'] ?? 0 };
}

/** `n` distinct chunks of `chunks`, in a seeded random order (a partial Fisher-Yates). */
function pickChunks(chunks: number, n: number, seed: number): number[] {
  let x = seed >>> 0;
  const rand = (): number => (x = (Math.imul(x, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const all = Array.from({ length: chunks }, (_, i) => i);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rand() * (chunks - i));
    [all[i], all[j]] = [all[j] as number, all[i] as number];
  }
  return all.slice(0, n);
}

async function pass(write: (off: number) => Promise<void>, offs: number[], flush: () => Promise<void>): Promise<{ cpuUs: number; readKiB: number; writeKiB: number }> {
  const io0 = ioCounters();
  const c0 = process.cpuUsage();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < offs.length) await write(offs[next++] as number);
  };
  await Promise.all(Array.from({ length: QD }, worker));
  await flush();
  const c = process.cpuUsage(c0);
  const io = ioCounters();
  const n = offs.length;
  return { cpuUs: (c.user + c.system) / n, readKiB: (io.rchar - io0.rchar) / n / 1024, writeKiB: (io.wchar - io0.wchar) / n / 1024 };
}

async function main(): Promise<void> {
  const imageBytes = Number(process.argv[2] ?? 512) * MiB;
  const writes = Number(process.argv[3] ?? 4096);
  const reps = Number(process.argv[4] ?? 3);
  const root = await mkdtemp(join(tmpdir(), 'snapnbd-firstw-'));
  try {
    const image = join(root, 'backing.raw');
    const fill = Buffer.alloc(MiB);
    for (let i = 0; i < fill.length; i++) fill[i] = (i * 7 + 3) & 0xff;
    writeFileSync(image, Buffer.alloc(0));
    for (let off = 0; off < imageBytes; off += MiB) writeFileSync(image, fill, { flag: 'a' });
    console.log(`${imageBytes / MiB} MiB backing image, ${writes} 4 KiB writes at QD ${QD} into distinct random 64 KiB chunks, then a flush`);
    for (let rep = 1; rep <= reps; rep++) {
      const dir = join(root, `s${rep}`);
      const s = await openCowStore(dir, { commitIntervalMs: 1000 });
      s.autoCompact = false;
      await s.createVolume({ name: 'v', size: imageBytes, chunkSize: CHUNK, backing: image });
      const dev = s.head('v');
      const buf = Buffer.alloc(BLOCK, 0xc3);
      const offs = pickChunks(imageBytes / CHUNK, writes, rep).map((c, i) => c * CHUNK + (i % (CHUNK / BLOCK)) * BLOCK);
      const write = (off: number): Promise<void> => dev.write(off, buf, { fua: false });
      const first = await pass(write, offs, () => s.flush());
      const again = await pass(write, offs, () => s.flush());
      await s.close();
      await rm(dir, { recursive: true, force: true });
      const line = (name: string, r: typeof first): string =>
        `${name}: ${r.cpuUs.toFixed(1)} us CPU, ${r.readKiB.toFixed(1)} KiB read, ${r.writeKiB.toFixed(1)} KiB written per write`;
      console.log(`rep ${rep}  ${line('first writes', first)}  |  ${line('rewrites', again)}`);
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

await main();
