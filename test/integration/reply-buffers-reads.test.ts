// Long READ replies share pooled buffers (src/server/reply-buffers.ts). Many 1 MiB reads in
// flight at once, against a client that stops reading for a while (so the server's writes linger
// in the socket), must each carry exactly their own data: a pool that handed one buffer to two
// reads would send another read's bytes. (A buffer given back before the kernel has its reply
// cannot show here: the session stops reading requests while replies wait in the socket, so no
// new read takes it; test/unit/reply-writer.test.ts holds that rule.)
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { NBD, RawClient } from '../helpers/raw-client.ts';
import { startServer, type RunningServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;
const BLOCKS = 24;
const READS = 96;

describe('pooled reply buffers under many long reads', () => {
  let s: RunningServer;
  const blocks = Array.from({ length: BLOCKS }, () => randomBytes(MiB));
  // Unaligned offsets too: a read spans two blocks.
  const offsetOf = (i: number): number => ((i * 7) % (BLOCKS - 1)) * MiB + (i % 3) * 4096;
  const expected = (off: number, len: number): Buffer => Buffer.concat(blocks).subarray(off, off + len);

  beforeAll(async () => {
    s = await startServer({ args: ['--volume', `vm=${BLOCKS}M`] });
    const c = await NbdTestClient.connect(s.port, 'vm');
    for (let i = 0; i < BLOCKS; i++) await c.write(i * MiB, blocks[i]!);
    await c.flush();
    await c.disconnect();
  });
  afterAll(async () => { await s?.stop(); });

  for (const structured of [false, true]) {
    it(`${structured ? 'structured' : 'simple'} replies: ${READS} reads of 1 MiB in flight, the client pausing, each gets its own bytes`, async () => {
      const c = await RawClient.connect(s.port);
      try {
        await c.handshake();
        await c.go('vm', { structured });
        for (let round = 0; round < 3; round++) {
          c.socket.pause(); // the kernel's buffers fill; the server's writes linger
          for (let i = 0; i < READS; i++) c.request({ type: NBD.CMD_READ, cookie: BigInt(i + 1), offset: offsetOf(i + round), length: MiB });
          await sleep(300);
          c.socket.resume();
          const seen = new Set<bigint>();
          for (let n = 0; n < READS; n++) {
            let cookie: bigint;
            let data: Buffer;
            if (structured) {
              const chunks = await c.structuredReply();
              cookie = chunks[0]!.cookie;
              const i = Number(cookie) - 1;
              data = Buffer.alloc(MiB);
              for (const ch of chunks) {
                expect(ch.type).toBe(NBD.REPLY_TYPE_OFFSET_DATA);
                const off = Number(ch.payload.readBigUInt64BE(0)) - offsetOf(i + round);
                ch.payload.copy(data, off, 8);
              }
            } else {
              const r = await c.simpleReply(MiB);
              expect(r.error).toBe(0);
              cookie = r.cookie;
              data = r.data;
            }
            const i = Number(cookie) - 1;
            seen.add(cookie);
            expect(data.equals(expected(offsetOf(i + round), MiB)), `read ${i} of round ${round}`).toBe(true);
          }
          expect(seen.size).toBe(READS);
        }
      } finally {
        c.socket.destroy();
      }
    });
  }
});
