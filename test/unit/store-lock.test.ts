// The store lock (src/storage/store-lock.ts) in one process: openStore and checkStore take it, a
// second opener is refused naming the holder, close() frees it, a holder that does not answer
// (or answers nonsense) is still refused, and two stores are locked independently.
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkStore, openStore } from '../../src/storage/index.ts';
import { acquireStoreLock, HOLDER_QUERY_TIMEOUT_MS, parseHolder, storeLockName } from '../../src/storage/store-lock.ts';
import { StoreError } from '../../src/storage/types.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'snapnbd-lock-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function refusal(p: Promise<unknown>): Promise<StoreError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(StoreError);
  expect((e as StoreError).code).toBe('STORE_LOCKED');
  return e as StoreError;
}

describe('store lock', () => {
  it('a second open in the same process is refused naming this process; after close it opens again', async () => {
    const d = join(dir, 's');
    const s = await openStore(d, { commitIntervalMs: 0, holder: () => ({ command: 'test holder', control: '/x/control.sock', listeners: ['nbd 127.0.0.1:1'] }) });
    const e = await refusal(openStore(d, { commitIntervalMs: 0 }));
    expect(e.message).toBe(`the store in ${d} is in use by this process (PID ${process.pid}) (test holder since ${/since (\S+),/.exec(e.message)![1]}, control socket /x/control.sock, nbd 127.0.0.1:1); a store belongs to one process at a time; stop that process first`);
    const link = join(dir, 'link');
    await symlink(d, link);
    expect((await refusal(openStore(link, { commitIntervalMs: 0 }))).message).toContain(`${link} (${d})`);
    await refusal(checkStore(d, { repair: true }));
    await s.close();
    await s.close(); // idempotent, and the lock stays released
    const s2 = await openStore(link, { commitIntervalMs: 0 });
    await s2.close();
    const r = await checkStore(d, { repair: false });
    expect(r.problems).toEqual([]);
  });

  it('a failed open (corrupt store) releases the lock', async () => {
    const d = join(dir, 's');
    await (await openStore(d, { commitIntervalMs: 0 })).close();
    await writeFile(join(d, 'snapnbd.sb'), Buffer.alloc(8192, 7));
    const e = await openStore(d, { commitIntervalMs: 0 }).then(() => null, (x: unknown) => x as StoreError);
    expect(e?.code).toBe('STORE_CORRUPT');
    const lock = await acquireStoreLock(d); // free again
    await lock.release();
  });

  it('two stores are locked independently', async () => {
    const a = await openStore(join(dir, 'a'), { commitIntervalMs: 0 });
    const b = await openStore(join(dir, 'b'), { commitIntervalMs: 0 });
    await a.close();
    await b.close();
  });

  it('a holder that never answers, or answers nonsense, still holds the store', async () => {
    const d = join(dir, 's');
    await (await openStore(d, { commitIntervalMs: 0 })).close();
    const { name } = await storeLockName(d);
    for (const reply of [null, 'not json\n', '{"pid":"1"}\n', 'x'.repeat(100_000)]) {
      const squatter = createServer((s) => {
        s.on('error', () => undefined);
        if (reply !== null) s.end(reply);
      });
      await new Promise<void>((r) => squatter.listen({ path: name }, r));
      try {
        const t0 = Date.now();
        const e = await refusal(openStore(d, { commitIntervalMs: 0 }));
        expect(e.message).toContain(`the store in ${d} is in use by another process that did not say who it is`);
        if (reply === null) expect(Date.now() - t0).toBeGreaterThanOrEqual(HOLDER_QUERY_TIMEOUT_MS - 50);
      } finally {
        await new Promise<void>((r) => squatter.close(() => r())); // the asker hung up already
      }
    }
    await (await openStore(d, { commitIntervalMs: 0 })).close();
  });

  it('parseHolder accepts only a well-formed answer', () => {
    const good = { pid: 12, command: 'snapnbd serve', dataDir: '/d', since: '2026-01-01T00:00:00.000Z', control: null, listeners: ['nbd 1.2.3.4:5'] };
    expect(parseHolder(JSON.stringify(good))).toEqual(good);
    expect(parseHolder(JSON.stringify({ ...good, control: '/d/control.sock' }))).toEqual({ ...good, control: '/d/control.sock' });
    for (const bad of ['', '[]', 'null', JSON.stringify({ ...good, pid: 1.5 }), JSON.stringify({ ...good, listeners: [3] }), JSON.stringify({ ...good, command: '' }), JSON.stringify({ ...good, control: 7 })]) {
      expect(parseHolder(bad)).toBe('silent');
    }
  });
});
