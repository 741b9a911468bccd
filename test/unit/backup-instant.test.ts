// Instant restore in process, on a file target whose block GETs the test holds or fails at will:
// a read of a block not restored yet waits for that block, a write into one fetch-merges first
// and is never overwritten by the background restore, the volume shows `restoring N%`, snapshots
// wait for the end, an unreachable target fails only the unrestored reads (EIO) while the task
// retries, and a restart resumes from the recorded progress without refetching written blocks.
// Also: the job list and a snapshot's `failed: REASON` survive a restart (saved-results.ts).
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { BackupResult } from '../../src/backup/create.ts';
import { BackupError, BackupErrorCode } from '../../src/backup/errors.ts';
import { FileTarget } from '../../src/backup/file-target.ts';
import { BackupManager } from '../../src/backup/manager.ts';
import { RESTORE_PARALLEL } from '../../src/backup/restore.ts';
import { decodeRestoreProgress, STATE_DIR } from '../../src/backup/state-files.ts';
import { parseTargetUrl, type ObjectStore, type TargetSpec } from '../../src/backup/target.ts';
import { openStore } from '../../src/storage/index.ts';
import type { Store } from '../../src/storage/types.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { formatVolumeState } from '../../src/volumes/state.ts';
import { volumeState, type Volume as ConsoleVolume } from '../../src/http/console/browser/model.ts';
import { stateText } from '../../src/http/console/browser/text.ts';
import { tempDir } from '../helpers/server.ts';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const DATA_BLOCKS = 12;

/** Block GETs for held names wait until released; while `down`, every block GET fails. */
class Gate {
  held = new Set<string>();
  down = false;
  /** Block PUTs fail while set. */
  putFails = false;
  /** Block PUTs wait while set. */
  putHeld = false;
  gets = new Map<string, number>();
  /** Block GETs waiting on a hold now. */
  holding = 0;
  /** Each block GET of a name in `watch` takes `slowMs`; `maxWatched` is how many overlapped at most. */
  watch = new Set<string>();
  slowMs = 0;
  maxWatched = 0;
  private watched = 0;
  private waiters: (() => void)[] = [];
  release(name = ''): void {
    this.held.delete(name);
    this.putHeld = false;
    for (const w of this.waiters.splice(0)) w();
  }
  wrap(inner: ObjectStore): ObjectStore {
    const self = this;
    return Object.assign(Object.create(inner) as ObjectStore, {
      async get(key: string, signal?: AbortSignal): Promise<Buffer | null> {
        const name = key.split('/').pop()!;
        if (key.includes('blocks/')) {
          while (self.held.has(name)) {
            self.holding++;
            await new Promise<void>((r) => self.waiters.push(r));
            self.holding--;
          }
          if (self.down) throw new BackupError(BackupErrorCode.TargetUnavailable, 'target unreachable (test)');
          self.gets.set(name, (self.gets.get(name) ?? 0) + 1);
          if (self.watch.has(name)) {
            self.maxWatched = Math.max(self.maxWatched, ++self.watched);
            await new Promise((r) => setTimeout(r, self.slowMs));
            self.watched--;
          }
        }
        return inner.get(key, signal);
      },
      async put(key: string, data: Buffer, signal?: AbortSignal): Promise<void> {
        if (key.includes('blocks/')) {
          while (self.putHeld) await new Promise<void>((r) => self.waiters.push(r));
          if (self.putFails) throw new BackupError(BackupErrorCode.TargetUnavailable, 'upload refused (test)');
        }
        return inner.put(key, data, signal);
      },
    });
  }
}

let dirs: string[] = [];
let open: { store: Store; bm: BackupManager }[] = [];

async function server(target: string, gate: Gate | null, dataDir?: string): Promise<{ store: Store; reg: VolumeRegistry; bm: BackupManager; dir: string }> {
  const dir = dataDir ?? tempDir('snapnbd-ir-');
  if (!dataDir) dirs.push(dir);
  const store = await openStore(dir);
  const reg = new VolumeRegistry(store, { defaultExport: 'v', readOnly: false });
  const targets = new Map<string, TargetSpec>([['t', parseTargetUrl(`file://${target}`)]]);
  const bm = new BackupManager({
    store, registry: reg, targets,
    openObjectStore: (spec) => (gate ? gate.wrap(new FileTarget(spec.location)) : new FileTarget(spec.location)),
  });
  open.push({ store, bm });
  return { store, reg, bm, dir };
}

async function close(s: { store: Store; bm: BackupManager }): Promise<void> {
  open = open.filter((o) => o.store !== s.store);
  await s.bm.close();
  await s.store.close();
}

afterEach(async () => {
  for (const o of open) {
    await o.bm.close();
    await o.store.close();
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = [];
  open = [];
});

/** A backup of a volume with DATA_BLOCKS random MiB then zeros; returns its id and content. */
async function backedUp(target: string): Promise<{ id: string; content: Buffer; name: (block: number) => string }> {
  const a = await server(target, null);
  await a.reg.createVolume({ name: 'v', size: SIZE });
  const content = Buffer.alloc(SIZE);
  randomBytes(DATA_BLOCKS * MiB).copy(content);
  await a.store.head('v').write(0, content.subarray(0, DATA_BLOCKS * MiB), { fua: false });
  await a.reg.createSnapshot('v', 's', undefined);
  const job = await a.bm.jobs.wait(a.bm.create({ target: 't', volume: 'v', snapshot: 's' }).id);
  if (job.state !== 'done') throw new Error(job.error?.message);
  await close(a);
  const name = (b: number): string => createHash('sha256').update(content.subarray(b * MiB, (b + 1) * MiB)).digest('hex');
  return { id: (job.result as BackupResult).id, content, name };
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const headOfR = (s: { store: Store }): ReturnType<Store['head']> => s.store.head('r');

async function readAll(store: Store, volume: string): Promise<Buffer> {
  const b = Buffer.alloc(SIZE);
  await store.head(volume).read(0, SIZE, b);
  return b;
}

/** The restore progress files and markers in a data dir. */
function restoreFiles(dir: string): string[] {
  return readdirSync(join(dir, STATE_DIR)).filter((n) => /^(restore|partial)-/.test(n));
}

function settled(p: Promise<unknown>): () => boolean {
  let done = false;
  p.then(() => { done = true; }, () => { done = true; });
  return () => done;
}

describe('instant restore', () => {
  it('serves at once: reads wait for their block, writes fetch-merge first and win over the background', async () => {
    const target = tempDir('snapnbd-ir-t-');
    dirs.push(target);
    const bk = await backedUp(target);
    const gate = new Gate();
    for (const b of [2, 5, 7]) gate.held.add(bk.name(b));
    const b = await server(target, gate);
    const job = await b.bm.restoreInstant({ target: 't', id: bk.id, volume: 'r' });
    const expected = Buffer.from(bk.content);
    await until('the unheld blocks', () => b.bm.jobs.get(job.id).bytesDone === (DATA_BLOCKS - 3) * MiB);
    const view = b.reg.volumeInfo('r');
    expect(view.state).toBe('restoring');
    expect(view.restore?.percent).toBe(Math.floor((100 * (DATA_BLOCKS - 3)) / DATA_BLOCKS));
    expect(formatVolumeState(view)).toBe('restoring 75%'); // the CLI's STATE column
    expect(stateText(volumeState(view as unknown as ConsoleVolume, []))).toBe('restoring 75%'); // the console's
    await expect(b.reg.createSnapshot('r', 'early', undefined)).rejects.toMatchObject({ code: 'VOLUME_BUSY' });
    const head = b.store.head('r');

    // A restored block and a zero block read at once.
    const got = Buffer.alloc(8192);
    await head.read(3 * MiB + 4096, 8192, got);
    expect(got.equals(expected.subarray(3 * MiB + 4096, 3 * MiB + 12288))).toBe(true);
    await head.read(14 * MiB, 8192, got);
    expect(got.equals(Buffer.alloc(8192))).toBe(true);

    // A read of held block 2 waits for it, then answers its backed-up bytes.
    const r2 = Buffer.alloc(4096);
    const reading = head.read(2 * MiB + 65536, 4096, r2);
    const readDone = settled(reading);
    await new Promise((r) => setTimeout(r, 100));
    expect(readDone()).toBe(false);
    gate.release(bk.name(2));
    await reading;
    expect(r2.equals(expected.subarray(2 * MiB + 65536, 2 * MiB + 69632))).toBe(true);

    // A partial write into held block 7 waits, then lands on the fetched block (merge).
    const w7 = randomBytes(4096);
    const writing = head.write(7 * MiB + 4096, w7, { fua: true });
    const writeDone = settled(writing);
    await new Promise((r) => setTimeout(r, 100));
    expect(writeDone()).toBe(false);
    gate.release(bk.name(7));
    await writing;
    w7.copy(expected, 7 * MiB + 4096);

    // Writes over a restored block and over a zero block stay.
    const w4 = randomBytes(MiB);
    await head.write(4 * MiB, w4, { fua: false });
    w4.copy(expected, 4 * MiB);
    const w13 = randomBytes(4096);
    await head.write(13 * MiB, w13, { fua: false });
    w13.copy(expected, 13 * MiB);

    gate.release(bk.name(5));
    const end = await b.bm.jobs.wait(job.id);
    expect(end.state).toBe('done');
    expect(b.reg.volumeInfo('r').state).toBe('ready');
    expect((await readAll(b.store, 'r')).equals(expected)).toBe(true);
    // Every block was fetched once: the reads and the write did not fetch twice.
    for (let i = 0; i < DATA_BLOCKS; i++) expect(gate.gets.get(bk.name(i))).toBe(1);
    expect(restoreFiles(b.dir)).toEqual([]);
    await b.reg.createSnapshot('r', 'after', undefined);
  });

  it('a write covering whole unrestored blocks replaces them without fetching them, recorded before it is answered', async () => {
    const target = tempDir('snapnbd-ir-t-');
    dirs.push(target);
    const bk = await backedUp(target);
    const gate = new Gate();
    // The background's workers take blocks in order: all of them wait on blocks 0-7.
    for (let i = 0; i < RESTORE_PARALLEL; i++) gate.held.add(bk.name(i));
    const b = await server(target, gate);
    const job = await b.bm.restoreInstant({ target: 't', id: bk.id, volume: 'r' });
    const head = b.store.head('r');
    const expected = Buffer.from(bk.content);

    // Blocks 9 and 10 whole, and the first half of block 11: only block 11 is fetched (merge).
    const w = randomBytes(2 * MiB + MiB / 2);
    await head.write(9 * MiB, w, { fua: false });
    w.copy(expected, 9 * MiB);
    expect(gate.gets.has(bk.name(9))).toBe(false);
    expect(gate.gets.has(bk.name(10))).toBe(false);
    expect(gate.gets.get(bk.name(11))).toBe(1);
    // Recorded before the answer: a restart would not fetch them over the written data.
    const rec = decodeRestoreProgress(readFileSync(join(b.dir, STATE_DIR, 'restore-r.json'), 'utf8'), 'progress');
    for (const i of [9, 10, 11]) expect((rec.done[i >> 3]! >> (i & 7)) & 1).toBe(1);
    expect(b.reg.volumeInfo('r').restore?.percent).toBe(Math.floor((100 * 3) / DATA_BLOCKS));
    const got = Buffer.alloc(3 * MiB);
    await head.read(9 * MiB, 3 * MiB, got);
    expect(got.equals(expected.subarray(9 * MiB, 12 * MiB))).toBe(true);

    // A whole-block zero of block 8 needs no fetch either.
    await head.zero(8 * MiB, MiB, { fua: false, noHole: false, fast: false });
    expected.fill(0, 8 * MiB, 9 * MiB);
    expect(gate.gets.has(bk.name(8))).toBe(false);

    for (let i = 0; i < RESTORE_PARALLEL; i++) gate.release(bk.name(i));
    const end = await b.bm.jobs.wait(job.id);
    expect(end.state).toBe('done');
    expect((end.result as { blocksFetched: number }).blocksFetched).toBe(DATA_BLOCKS - 3);
    expect((await readAll(b.store, 'r')).equals(expected)).toBe(true);
    for (const i of [8, 9, 10]) expect(gate.gets.has(bk.name(i))).toBe(false);
  });

  it('while a read waits for its block, the background fetches one block at a time', async () => {
    const target = tempDir('snapnbd-ir-t-');
    dirs.push(target);
    const bk = await backedUp(target);
    const gate = new Gate();
    // The background's workers all wait on blocks 0-7; the read waits on block 10.
    for (let i = 0; i < RESTORE_PARALLEL; i++) gate.held.add(bk.name(i));
    gate.held.add(bk.name(10));
    for (const i of [8, 9, 11]) gate.watch.add(bk.name(i));
    gate.slowMs = 50;
    const b = await server(target, gate);
    const job = await b.bm.restoreInstant({ target: 't', id: bk.id, volume: 'r' });
    await until('the background waiting', () => gate.holding === RESTORE_PARALLEL);
    const got = Buffer.alloc(4096);
    const reading = headOfR(b).read(10 * MiB, 4096, got);
    await until('the read waiting', () => gate.holding === RESTORE_PARALLEL + 1);
    for (let i = 0; i < RESTORE_PARALLEL; i++) gate.release(bk.name(i));
    await until('blocks 8, 9 and 11', () => [8, 9, 11].every((i) => gate.gets.has(bk.name(i))));
    expect(gate.maxWatched).toBe(1);
    gate.release(bk.name(10));
    await reading;
    expect(got.equals(bk.content.subarray(10 * MiB, 10 * MiB + 4096))).toBe(true);
    expect((await b.bm.jobs.wait(job.id)).state).toBe('done');
    expect((await readAll(b.store, 'r')).equals(bk.content)).toBe(true);
  });

  it('an unreachable target fails only unrestored reads (EIO) and the task retries to the end', async () => {
    const target = tempDir('snapnbd-ir-t-');
    dirs.push(target);
    const bk = await backedUp(target);
    const gate = new Gate();
    gate.held.add(bk.name(9));
    const b = await server(target, gate);
    const job = await b.bm.restoreInstant({ target: 't', id: bk.id, volume: 'r' });
    await until('the unheld blocks', () => b.bm.jobs.get(job.id).bytesDone === (DATA_BLOCKS - 1) * MiB);
    gate.down = true;
    gate.release(bk.name(9));
    const head = b.store.head('r');
    const buf = Buffer.alloc(4096);
    await expect(head.read(9 * MiB, 4096, buf)).rejects.toMatchObject({ errno: 'EIO', message: expect.stringContaining('not restored yet') });
    await head.read(1 * MiB, 4096, buf);
    expect(buf.equals(bk.content.subarray(MiB, MiB + 4096))).toBe(true);
    await until('the stalled state', () => b.reg.volumeInfo('r').restore?.stalled != null);
    expect(formatVolumeState(b.reg.volumeInfo('r'))).toBe('restoring 91% (stalled: target unreachable (test))');
    expect(b.bm.jobs.get(job.id).state).toBe('running');
    gate.down = false;
    expect((await b.bm.jobs.wait(job.id)).state).toBe('done');
    expect((await readAll(b.store, 'r')).equals(bk.content)).toBe(true);
  });

  it('a restart resumes from the recorded progress and never refetches over a written block', async () => {
    const target = tempDir('snapnbd-ir-t-');
    dirs.push(target);
    const bk = await backedUp(target);
    const gate = new Gate();
    for (let i = 0; i < DATA_BLOCKS; i++) if (i !== 1) gate.held.add(bk.name(i));
    const b = await server(target, gate);
    const job = await b.bm.restoreInstant({ target: 't', id: bk.id, volume: 'r' });
    await until('block 1', () => b.bm.jobs.get(job.id).bytesDone === MiB);
    const w1 = randomBytes(MiB);
    await b.store.head('r').write(MiB, w1, { fua: true });
    await close(b); // the background restore stops here: block 1 only
    expect(existsSync(join(b.dir, STATE_DIR, 'restore-r.json'))).toBe(true);

    const gate2 = new Gate();
    const c = await server(target, gate2, b.dir);
    const resumed = c.bm.jobs.list().filter((j) => j.kind === 'restore' && j.volume === 'r').pop();
    expect(resumed?.state).toBe('running');
    expect((await c.bm.jobs.wait(resumed!.id)).state).toBe('done');
    const expected = Buffer.from(bk.content);
    w1.copy(expected, MiB);
    expect((await readAll(c.store, 'r')).equals(expected)).toBe(true);
    expect(gate2.gets.has(bk.name(1))).toBe(false);
  });

  it('cancelling an instant restore removes the half-filled volume', async () => {
    const target = tempDir('snapnbd-ir-t-');
    dirs.push(target);
    const bk = await backedUp(target);
    const gate = new Gate();
    gate.held.add(bk.name(0));
    const b = await server(target, gate);
    const job = await b.bm.restoreInstant({ target: 't', id: bk.id, volume: 'r' });
    b.bm.jobs.cancel(job.id);
    gate.release(bk.name(0));
    expect((await b.bm.jobs.wait(job.id)).state).toBe('cancelled');
    expect(() => b.store.volumeInfo('r')).toThrow(/r/);
    expect(restoreFiles(b.dir)).toEqual([]);
  });
});

describe('results across a restart', () => {
  it('the job list and a failed backup state survive; a job running at a crash shows INTERRUPTED', async () => {
    const target = tempDir('snapnbd-ir-t-');
    dirs.push(target);
    const gate = new Gate();
    const a = await server(target, gate);
    await a.reg.createVolume({ name: 'v', size: 4 * MiB });
    await a.store.head('v').write(0, randomBytes(2 * MiB), { fua: false });
    await a.reg.createSnapshot('v', 'bad', undefined);
    await a.reg.createSnapshot('v', 'cut', undefined);
    gate.putFails = true;
    const failed = await a.bm.jobs.wait(a.bm.create({ target: 't', volume: 'v', snapshot: 'bad' }).id);
    expect(failed.state).toBe('failed');
    gate.putFails = false;
    gate.putHeld = true;
    const running = a.bm.create({ target: 't', volume: 'v', snapshot: 'cut' });
    const results = join(a.dir, STATE_DIR, 'results.json');
    await until('the running job saved', () => existsSync(results) && readFileSync(results, 'utf8').includes(`"id":"${running.id}","kind":"backup"`));
    const atCrash = readFileSync(results); // what a kill -9 now would leave
    gate.release();
    await close(a);
    writeFileSync(results, atCrash);

    const b = await server(target, null, a.dir);
    const jobs = b.bm.jobs.list();
    expect(jobs.find((j) => j.id === failed.id)).toMatchObject({ state: 'failed', error: { message: failed.error!.message } });
    expect(jobs.find((j) => j.id === running.id)).toMatchObject({ state: 'failed', error: { code: 'INTERRUPTED' } });
    const snaps = b.reg.listSnapshots('v');
    expect(snaps.find((s) => s.name === 'bad')?.backup).toBe(`failed: ${failed.error!.message}`);
    expect(snaps.find((s) => s.name === 'cut')?.backup).toMatch(/^failed: the server stopped/);
    // New jobs do not reuse old ids; a later success replaces the failed state.
    const again = await b.bm.jobs.wait(b.bm.create({ target: 't', volume: 'v', snapshot: 'bad' }).id);
    expect(jobs.map((j) => j.id)).not.toContain(again.id);
    expect(again.state).toBe('done');
    expect(b.reg.listSnapshots('v').find((s) => s.name === 'bad')?.backup).toBe('backed-up');
  });
});
