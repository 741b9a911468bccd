// Point in time under load, and crashes around snapshot operations, against the real server.
//
// Point in time: two NBD connections keep 32 writes each in flight, every write to its own 4 KiB
// block with its id in every byte-quad, and we record when each was issued and answered. A
// snapshot is taken in the middle. Its content must be the state after some prefix of answered
// writes: every write answered before the request is in it, none issued after the reply is, and
// no write in it was issued after one missing from it had been answered.
//
// Crash: SIGKILL the server right after (and during) snapshot operations; after a restart the
// listing and the contents agree with what was answered.
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { ControlClient } from '../../src/control/client.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const MiB = 1024 * 1024;
const BLOCK = 4096;
const QUEUE_DEPTH = 32;
const CONNECTIONS = 2;
/** When to SIGKILL the server after sending a snapshot.create (-1: at once, in the same tick). */
const KILL_DELAYS_MS = [-1, 0, 1, 3, 10, 30];

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function start(dataDir: string, args: string[]): Promise<{ server: RunningServer; ctl: ControlClient }> {
  const server = await startServer({ dataDir, args });
  cleanups.push(async () => { if (server.proc.exitCode === null && server.proc.signalCode === null) await server.stop(); });
  const ctl = await ControlClient.connect(server.controlPath);
  cleanups.push(() => ctl.close());
  return { server, ctl };
}

async function readAll(port: number, name: string, size: number): Promise<Buffer> {
  const c = await NbdTestClient.connect(port, name);
  const out = Buffer.alloc(size);
  const step = 4 * MiB;
  for (let off = 0; off < size; off += step) (await c.read(off, Math.min(step, size - off))).copy(out, off);
  await c.disconnect();
  return out;
}

async function waitFor(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

interface WriteRecord { id: number; block: number; issued: bigint; answered: bigint | null }

describe('point in time under load', () => {
  it('a snapshot taken during two-connection QD32 writes holds a prefix of the answered writes', async () => {
    const size = 64 * MiB;
    const dataDir = tempDir();
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const { server, ctl } = await start(dataDir, ['--volume', `pit=${size / MiB}M`]);
    const blocks = size / BLOCK;
    // Distinct blocks in a random order: each write's presence is decidable on its own.
    const order = Array.from({ length: blocks }, (_, i) => i);
    const rnd = randomBytes(blocks * 4);
    for (let i = blocks - 1; i > 0; i--) {
      const j = rnd.readUInt32BE(i * 4) % (i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const records: WriteRecord[] = [];
    const clients = await Promise.all(Array.from({ length: CONNECTIONS }, () => NbdTestClient.connect(server.port, 'pit')));
    let stop = false;
    let next = 0;
    const worker = async (c: NbdTestClient): Promise<void> => {
      while (!stop && next < blocks) {
        const id = next + 1; // 0 means "never written"
        const block = order[next++]!;
        const data = Buffer.alloc(BLOCK);
        for (let o = 0; o < BLOCK; o += 4) data.writeUInt32BE(id, o);
        const rec: WriteRecord = { id, block, issued: process.hrtime.bigint(), answered: null };
        records.push(rec);
        await c.write(block * BLOCK, data);
        rec.answered = process.hrtime.bigint();
      }
    };
    const running = clients.flatMap((c) => Array.from({ length: QUEUE_DEPTH }, () => worker(c)));
    const answered = (): number => records.reduce((n, r) => n + (r.answered !== null ? 1 : 0), 0);
    // Snapshot once a quarter of the blocks are written, so writes run on both sides of it.
    await waitFor('writes before the snapshot', () => answered() >= blocks / 4);
    const requestSent = process.hrtime.bigint();
    await ctl.call('snapshot.create', { volume: 'pit', name: 'mid' });
    const replyReceived = process.hrtime.bigint();
    const afterStart = answered();
    await waitFor('writes after the snapshot', () => answered() >= Math.min(blocks, afterStart + blocks / 4));
    stop = true;
    await Promise.all(running);
    await Promise.all(clients.map((c) => c.disconnect()));

    const answeredBefore = records.filter((r) => r.answered !== null && r.answered < requestSent).length;
    const issuedAfter = records.filter((r) => r.issued > replyReceived).length;
    // The test means something only if writes were on both sides of the snapshot.
    expect(answeredBefore).toBeGreaterThan(100);
    expect(issuedAfter).toBeGreaterThan(100);

    const snap = await readAll(server.port, 'pit@mid', size);
    const byBlock = new Map(records.map((r) => [r.block, r]));
    let present = 0;
    let maxIssuedPresent = 0n;
    let minAnsweredAbsent: bigint | null = null;
    for (let b = 0; b < blocks; b++) {
      const first = snap.readUInt32BE(b * BLOCK);
      for (let o = 4; o < BLOCK; o += 4) {
        if (snap.readUInt32BE(b * BLOCK + o) !== first) throw new Error(`block ${b} is torn in the snapshot`);
      }
      const rec = byBlock.get(b);
      if (first !== 0) {
        expect(rec?.id, `block ${b} holds a write that was never made there`).toBe(first);
        present++;
        if (rec!.issued > replyReceived) throw new Error(`write ${rec!.id} issued after the snapshot reply is in the snapshot`);
        if (rec!.issued > maxIssuedPresent) maxIssuedPresent = rec!.issued;
      } else if (rec) {
        if (rec.answered !== null && rec.answered < requestSent) throw new Error(`write ${rec.id} answered before the request is missing`);
        if (rec.answered !== null && (minAnsweredAbsent === null || rec.answered < minAnsweredAbsent)) minAnsweredAbsent = rec.answered;
      }
    }
    // A prefix: no present write was issued after a missing one had been answered.
    if (minAnsweredAbsent !== null) expect(maxIssuedPresent <= minAnsweredAbsent).toBe(true);
    expect(present).toBeGreaterThanOrEqual(answeredBefore);
    // The head has everything that was answered.
    const head = await readAll(server.port, 'pit', size);
    for (const r of records) if (r.answered !== null) expect(head.readUInt32BE(r.block * BLOCK)).toBe(r.id);

    const inFlightDuring = records.filter((r) => r.issued < replyReceived && r.answered !== null && r.answered > requestSent);
    const stallMs = inFlightDuring.reduce((m, r) => Math.max(m, Number(r.answered! - r.issued) / 1e6), 0);
    console.log(`point in time: ${records.length} writes, ${answeredBefore} before, ${issuedAfter} after, snapshot.create ${(Number(replyReceived - requestSent) / 1e6).toFixed(1)} ms, longest write across it ${stallMs.toFixed(1)} ms`);
  });
});

describe('crash around snapshot operations', () => {
  it('answered creates, deletes, rollbacks and clones survive SIGKILL; an unanswered create is all or nothing', async () => {
    const size = 8 * MiB;
    const dataDir = tempDir();
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const args = ['--volume', `vm=${size / MiB}M`];
    let { server, ctl } = await start(dataDir, args);
    const v1 = randomBytes(size);
    let c = await NbdTestClient.connect(server.port, 'vm');
    await c.write(0, v1);
    await c.flush();
    await ctl.call('snapshot.create', { volume: 'vm', name: 'a' });
    const v2 = Buffer.from(v1);
    randomBytes(MiB).copy(v2, 2 * MiB);
    await c.write(2 * MiB, v2.subarray(2 * MiB, 3 * MiB));
    await ctl.call('snapshot.create', { volume: 'vm', name: 'b' });
    await ctl.call('volume.clone', { volume: 'vm', snapshot: 'a', name: 'cl' });
    await ctl.call('snapshot.delete', { volume: 'vm', name: 'a' });
    await c.disconnect();
    // The server releases the export when it sees the close: wait for that, not just our side.
    await waitFor('the connection to be gone', async () => (await ctl.call<{ connections: number }>('volume.info', { name: 'vm' })).connections === 0);
    await ctl.call('snapshot.rollback', { volume: 'vm', name: 'b' });
    await server.kill();
    ctl.close();

    ({ server, ctl } = await start(dataDir, args));
    let list = await ctl.call<{ snapshots: { name: string; state: string }[] }>('snapshot.list', { volume: 'vm' });
    expect(list.snapshots.map((s) => [s.name, s.state])).toEqual([['b', 'ready']]);
    expect((await readAll(server.port, 'vm@b', size)).equals(v2)).toBe(true);
    expect((await readAll(server.port, 'vm', size)).equals(v2)).toBe(true);
    expect((await readAll(server.port, 'cl', size)).equals(v1)).toBe(true);
    expect(await ctl.call('volume.info', { name: 'cl' })).toMatchObject({ origin: { volume: 'vm', snapshot: 'a' } });

    // Kill while a create is in flight (sent, not answered): after restart it is there with
    // exactly the head's content, or not there at all.
    c = await NbdTestClient.connect(server.port, 'vm');
    const v3 = Buffer.from(v2);
    randomBytes(MiB).copy(v3, 5 * MiB);
    await c.write(5 * MiB, v3.subarray(5 * MiB, 6 * MiB));
    await c.flush();
    // Kill after a few delays, so that some land before, during and after the operation.
    const outcomes: string[] = [];
    const kept: string[] = [];
    for (const delayMs of KILL_DELAYS_MS) {
      const name = `inflight${delayMs}`;
      const pending = ctl.call('snapshot.create', { volume: 'vm', name }).then(() => 'answered', () => 'unanswered');
      if (delayMs < 0) server.proc.kill('SIGKILL');
      else setTimeout(() => server.proc.kill('SIGKILL'), delayMs);
      const outcome = await pending;
      await server.kill();
      ctl.close();
      ({ server, ctl } = await start(dataDir, args));
      list = await ctl.call('snapshot.list', { volume: 'vm' });
      const names = list.snapshots.map((s) => s.name);
      if (outcome === 'answered') expect(names).toContain(name);
      if (names.includes(name)) {
        kept.push(name);
        expect(list.snapshots.find((s) => s.name === name)!.state).toBe('ready');
        expect((await readAll(server.port, `vm@${name}`, size)).equals(v3)).toBe(true);
      }
      expect(names.filter((n) => !n.startsWith('inflight'))).toEqual(['b']);
      expect((await readAll(server.port, 'vm', size)).equals(v3)).toBe(true);
      outcomes.push(`${delayMs} ms: ${outcome}, ${names.includes(name) ? 'present' : 'absent'}`);
    }
    console.log(`crash during snapshot.create, kill after ${outcomes.join('; ')}`);
    expect(outcomes.filter((o) => o.includes('unanswered')).length, 'kills that landed while a create was in flight').toBeGreaterThan(0);

    // Kill during a rollback to b: afterwards the head is wholly v3 (not done) or wholly v2 (done).
    const rb = ctl.call('snapshot.rollback', { volume: 'vm', name: 'b' }).then(() => 'answered', () => 'unanswered');
    setImmediate(() => server.proc.kill('SIGKILL'));
    const rbOutcome = await rb;
    await server.kill();
    ctl.close();
    ({ server, ctl } = await start(dataDir, args));
    const headAfter = await readAll(server.port, 'vm', size);
    if (rbOutcome === 'answered') expect(headAfter.equals(v2)).toBe(true);
    else expect(headAfter.equals(v2) || headAfter.equals(v3)).toBe(true);

    // Kill during a delete of b: afterwards b is there with its content, or gone; the clone stays.
    const del = ctl.call('snapshot.delete', { volume: 'vm', name: 'b' }).then(() => 'answered', () => 'unanswered');
    setImmediate(() => server.proc.kill('SIGKILL'));
    const delOutcome = await del;
    await server.kill();
    ctl.close();
    ({ server, ctl } = await start(dataDir, args));
    list = await ctl.call('snapshot.list', { volume: 'vm' });
    const hasB = list.snapshots.some((s) => s.name === 'b');
    if (delOutcome === 'answered') expect(hasB).toBe(false);
    if (hasB) expect((await readAll(server.port, 'vm@b', size)).equals(v2)).toBe(true);
    expect((await readAll(server.port, 'cl', size)).equals(v1)).toBe(true);
    console.log(`crash during rollback: ${rbOutcome}; during delete: ${delOutcome}, snapshot ${hasB ? 'kept' : 'gone'}`);
  });
});
