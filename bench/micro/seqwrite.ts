// The 1 MiB sequential write path in process (no fio, no sockets): WRITE requests cut into the
// 64 KiB chunks a socket read delivers (each a fresh buffer, as Node allocates them), through
// the decoder (src/protocol/decoder.ts) into the store at queue depth 8, as dispatch.ts does.
// Two ways, interleaved in rounds: `views` hands the payload on as views of the chunks
// (writeGather: one pwritev per run of slots), `copy` joins it into one fresh buffer first (the
// decoder before the gather list). CPU time per GiB (process.cpuUsage: every thread, the pool's
// pwrites included) is the figure that survives a busy machine. The volume is small and written
// over and over (the first pass allocates, the rest go in place) in a tmpfs when there is one
// (/dev/shm): the disk's writeback and dirty-page throttling, which swamp the difference on a
// loaded machine, stay out of the figure.
// Run: node --import tsx bench/micro/seqwrite.ts [GiB written, default 1] [rounds, default 3] [volume MiB, default 64]
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cmd } from '../../src/protocol/constants.ts';
import { InboundDecoder, type Payload } from '../../src/protocol/decoder.ts';
import { encodeRequestHeader } from '../../src/protocol/transmission.ts';
import { openCowStore } from '../../src/storage/index.ts';

const MiB = 1024 * 1024;
const QD = 8;
const SOCKET_READ = 64 * 1024;

type Mode = 'views' | 'copy';

async function run(dir: string, size: number, total: number, mode: Mode): Promise<{ cpuMsPerGiB: number; wallMsPerGiB: number }> {
  const s = await openCowStore(dir, {});
  s.autoCompact = false;
  await s.createVolume({ name: 'v', size });
  const dev = s.head('v');
  const payload = Buffer.alloc(MiB, 0x5a);
  const requests = total / MiB;
  let inFlight = 0;
  let done = 0;
  let wake: (() => void) | null = null;
  const decoder = new InboundDecoder({
    onClientFlags() {},
    onOption() {},
    onProtocolError(e) { throw e; },
    onRequest(h, p: Payload | null) {
      inFlight++;
      const w = Buffer.isBuffer(p) ? dev.write(h.offset, p, { fua: false })
        : mode === 'views' ? dev.writeGather!(h.offset, p!, h.length, { fua: false })
          : dev.write(h.offset, Buffer.concat(p!, h.length), { fua: false });
      void w.then(() => {
        inFlight--;
        done++;
        wake?.();
      });
    },
  });
  decoder.startTransmission();
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  // The byte stream of every request, fed in socket-sized fresh chunks while fewer than QD wait.
  let pending = Buffer.alloc(0);
  for (let i = 0; i < requests; i++) {
    const header = encodeRequestHeader({ type: Cmd.WRITE, flags: 0, cookie: Buffer.alloc(8), offset: (i * MiB) % size, length: MiB });
    pending = Buffer.concat([pending, header, payload]);
    while (pending.length >= SOCKET_READ) {
      while (inFlight >= QD) await new Promise<void>((r) => (wake = r));
      const chunk = Buffer.allocUnsafeSlow(SOCKET_READ);
      pending.copy(chunk, 0, 0, SOCKET_READ);
      pending = pending.subarray(SOCKET_READ);
      decoder.push(chunk);
    }
  }
  if (pending.length > 0) decoder.push(Buffer.from(pending));
  while (done < requests) await new Promise<void>((r) => (wake = r));
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const c = process.cpuUsage(c0);
  await s.close();
  const gib = total / 1024 / MiB;
  return { cpuMsPerGiB: (c.user + c.system) / 1e3 / gib, wallMsPerGiB: wall / gib };
}

const totalGiB = Number(process.argv[2] ?? 1);
const rounds = Number(process.argv[3] ?? 3);
const sizeMiB = Number(process.argv[4] ?? 64);
const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
console.log(`${totalGiB} GiB of 1 MiB writes over a ${sizeMiB} MiB volume in ${base}, queue depth ${QD}`);
const results: Record<Mode, number[]> = { views: [], copy: [] };
for (let r = 0; r < rounds; r++) {
  for (const mode of (r % 2 === 0 ? ['copy', 'views'] : ['views', 'copy']) as Mode[]) {
    const dir = await mkdtemp(join(base, 'snapnbd-seqw-'));
    try {
      const m = await run(dir, sizeMiB * MiB, totalGiB * 1024 * MiB, mode);
      results[mode].push(m.cpuMsPerGiB);
      console.log(`round ${r + 1} ${mode}: CPU ${m.cpuMsPerGiB.toFixed(0)} ms/GiB, wall ${m.wallMsPerGiB.toFixed(0)} ms/GiB`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
console.log(`median CPU ms/GiB: copy ${median(results.copy).toFixed(0)}, views ${median(results.views).toFixed(0)} (views/copy ${(median(results.views) / median(results.copy)).toFixed(2)})`);
