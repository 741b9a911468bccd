// Limits a hostile client cannot push past: a hundred connections that send 1 MiB READs and never
// read the replies keep the server's RSS under its memory budget plus a margin, and a normal
// client is still served; connections that leave replies unread are dropped after the stall
// timeout; one address cannot open more than --max-connections-per-client.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient } from '../helpers/raw-client.ts';
import { startServer, type RunningServer } from '../helpers/server.ts';

const MiB = 2 ** 20;
const BUDGET_MIB = 256;
/** Node's heap, code and the engine's caches besides the budgeted buffers. */
const MARGIN_MIB = 300;
const HOSTILE = 100;
const READS_EACH = 64;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

async function hostile(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  await c.handshake();
  await c.go('vm');
  c.socket.pause(); // never read a reply
  for (let i = 0; i < READS_EACH; i++) c.request({ type: 0, cookie: BigInt(i), offset: (i % 32) * MiB, length: MiB });
  return c;
}

describe('the server-wide memory budget', () => {
  let server: RunningServer;
  const clients: RawClient[] = [];
  beforeAll(async () => {
    server = await startServer({ args: ['--volume', 'vm=64M', '--memory-budget', `${BUDGET_MIB}M`, '--stall-timeout', '600'] });
  });
  afterAll(async () => {
    for (const c of clients) c.destroy();
    await server?.stop();
  });

  it(`${HOSTILE} connections that never read 1 MiB replies keep RSS under the budget + ${MARGIN_MIB} MiB; a normal client is served`, async () => {
    const before = rssMiB(server.proc.pid!);
    for (let i = 0; i < HOSTILE; i += 10) clients.push(...await Promise.all(Array.from({ length: 10 }, () => hostile(server.port))));
    let peak = 0;
    for (let t = 0; t < 20; t++) {
      peak = Math.max(peak, rssMiB(server.proc.pid!));
      await new Promise((r) => setTimeout(r, 250));
    }
    console.log(`memory-budget: RSS ${before.toFixed(0)} MiB before, peak ${peak.toFixed(0)} MiB with ${HOSTILE} hostile connections (budget ${BUDGET_MIB} MiB)`);
    expect(peak).toBeLessThan(BUDGET_MIB + MARGIN_MIB);
    // A normal client: its READ is answered while the others hold the budget.
    const ok = await RawClient.connect(server.port);
    await ok.handshake();
    await ok.go('vm');
    ok.request({ type: 0, cookie: 7n, offset: 0, length: MiB });
    const r = await ok.simpleReply(MiB);
    expect(r.error).toBe(0);
    ok.destroy();
  });
});

describe('stalled readers and connections per address', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer({ args: ['--volume', 'vm=64M', '--stall-timeout', '2', '--max-connections-per-client', '3'] });
  });
  afterAll(async () => { await server?.stop(); });

  it('a connection that leaves its replies unread is dropped after --stall-timeout', async () => {
    const c = await hostile(server.port);
    const end = Date.now() + 30_000;
    while (!/replies unread for 2000 ms/.test(server.stderr()) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    expect(server.stderr()).toMatch(/replies unread for 2000 ms \(\d+ bytes queued\), closing/);
    c.socket.resume(); // drain what did arrive: the connection then ends
    expect(await c.closesWithin(30_000)).toBe(true);
  });

  it('a fourth connection from one address is refused; after one closes, a new one is served', async () => {
    const held = await Promise.all([0, 1, 2].map(async () => {
      const c = await RawClient.connect(server.port);
      await c.greeting();
      return c;
    }));
    const extra = await RawClient.connect(server.port);
    expect(await extra.closesWithin(10_000)).toBe(true);
    held[0]!.destroy();
    await held[0]!.closed;
    await new Promise((r) => setTimeout(r, 200));
    const again = await RawClient.connect(server.port);
    expect(await again.greeting()).toBeGreaterThan(0);
    for (const c of [...held, again]) c.destroy();
  });
});
