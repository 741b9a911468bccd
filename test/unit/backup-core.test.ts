// The backup layer in process, on a file target: full and incremental backups (the incremental
// reads only what the engine's diff names), restore byte for byte, verify naming bad objects,
// encryption, prune and garbage collection, the busy rule for a snapshot being backed up.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BackupManager } from '../../src/backup/manager.ts';
import { parseTargetUrl, type TargetSpec } from '../../src/backup/target.ts';
import type { BackupResult } from '../../src/backup/create.ts';
import { realFileIo, type FileIo } from '../../src/storage/file-io.ts';
import { openStore } from '../../src/storage/index.ts';
import type { Store } from '../../src/storage/types.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';
import { tempDir } from '../helpers/server.ts';

const MiB = 1024 * 1024;
let dirs: string[] = [];
let stores: Store[] = [];
let managers: BackupManager[] = [];

async function server(targets: Record<string, string>, fileIo?: FileIo): Promise<{ store: Store; reg: VolumeRegistry; bm: BackupManager }> {
  const d = tempDir('snapnbd-bk-');
  dirs.push(d);
  const store = await openStore(d, fileIo ? { fileIo } : {});
  stores.push(store);
  const reg = new VolumeRegistry(store, { defaultExport: 'v', readOnly: false });
  const t = new Map<string, TargetSpec>(Object.entries(targets).map(([k, v]) => [k, parseTargetUrl(v)]));
  const bm = new BackupManager({ store, registry: reg, targets: t });
  managers.push(bm);
  return { store, reg, bm };
}

async function read(store: Store, volume: string, snapshot: string | null): Promise<Buffer> {
  const dev = snapshot === null ? store.head(volume) : store.snapshotView(volume, snapshot);
  const b = Buffer.alloc(dev.size);
  await dev.read(0, dev.size, b);
  return b;
}

async function run<T>(bm: BackupManager, id: string): Promise<T> {
  const j = await bm.jobs.wait(id);
  if (j.state !== 'done') throw new Error(`job ${id} ${j.state}: ${j.error?.message}`);
  return j.result as T;
}

let target: string;
beforeEach(() => {
  target = tempDir('snapnbd-target-');
  dirs.push(target);
});
afterEach(async () => {
  for (const m of managers) await m.close();
  for (const s of stores) await s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs = []; stores = []; managers = [];
});

describe('backups on a file target', () => {
  it('full, then incremental uploading only the changed MiB; both restore exactly elsewhere', async () => {
    const a = await server({ t: `file://${target}` });
    await a.reg.createVolume({ name: 'v', size: 32 * MiB });
    const head = a.store.head('v');
    await head.write(0, randomBytes(8 * MiB), { fua: false });
    await head.write(20 * MiB, randomBytes(2 * MiB), { fua: false });
    await a.reg.createSnapshot('v', 's1', undefined);
    const full = await run<BackupResult>(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's1' }).id);
    expect(full.blocksUploaded).toBe(10);
    expect(full.blocksZero).toBe(22);
    expect(full.base).toBeNull();
    await head.write(3 * MiB + 4096, randomBytes(MiB), { fua: false }); // straddles two blocks
    await a.reg.createSnapshot('v', 's2', undefined);
    const inc = await run<BackupResult>(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's2' }).id);
    expect(inc.base).toBe(full.id);
    expect(inc.bytesRead).toBe(2 * MiB);
    expect(inc.bytesUploaded).toBeLessThanOrEqual(2 * MiB);
    expect(inc.blocksReused).toBe(8);
    expect(a.reg.listSnapshots('v').map((s) => s.backup)).toEqual(['backed-up', 'backed-up']);

    const b = await server({ t: `file://${target}` });
    for (const [id, snap] of [[full.id, 's1'], [inc.id, 's2']] as const) {
      await run(b.bm, b.bm.restore({ target: 't', id, volume: `r-${snap}` }).id);
      expect((await read(b.store, `r-${snap}`, null)).equals(await read(a.store, 'v', snap))).toBe(true);
    }
    expect((await b.bm.list({ target: 't' })).map((x) => x.id)).toEqual([full.id, inc.id]);
  });

  it('reads the snapshot with maintenance reads (the pool, never the loop); a client of the same snapshot reads as a client', async () => {
    const io = new HoldFileIo(realFileIo);
    const a = await server({ t: `file://${target}` }, io);
    await a.reg.createVolume({ name: 'v', size: 8 * MiB });
    await a.store.head('v').write(0, randomBytes(4 * MiB), { fua: false });
    await a.reg.createSnapshot('v', 's1', undefined);
    const before = io.ioOf('.dat');
    const full = await run<BackupResult>(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's1' }).id);
    expect(full.bytesRead).toBe(4 * MiB);
    const during = io.ioOf('.dat');
    expect(during.reads - before.reads).toBeGreaterThan(0);
    expect(during.backgroundReads - before.backgroundReads).toBe(during.reads - before.reads);
    await read(a.store, 'v', 's1'); // an NBD client's view of the snapshot
    const after = io.ioOf('.dat');
    expect(after.reads).toBeGreaterThan(during.reads);
    expect(after.backgroundReads).toBe(during.backgroundReads);
  });

  it('verify names a corrupted and a deleted block and the backups they break; restore fails and leaves no volume', async () => {
    const a = await server({ t: `file://${target}` });
    await a.reg.createVolume({ name: 'v', size: 4 * MiB });
    await a.store.head('v').write(0, randomBytes(3 * MiB), { fua: false });
    await a.reg.createSnapshot('v', 's1', undefined);
    const r = await run<BackupResult>(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's1' }).id);
    const blockFiles = readdirSync(join(target, 'blocks'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
    expect(blockFiles.length).toBe(3);
    const corrupt = readFileSync(blockFiles[0]!);
    corrupt[100]! ^= 1;
    writeFileSync(blockFiles[0]!, corrupt);
    rmSync(blockFiles[1]!);
    const v = await run<{ ok: boolean; bad: { object: string; problem: string; backups: string[] }[] }>(a.bm, a.bm.verify({ target: 't', samplePct: 100 }).id);
    expect(v.ok).toBe(false);
    const rel = (f: string): string => f.slice(target.length + 1);
    expect(v.bad).toEqual([
      { object: rel(blockFiles[0]!), problem: 'corrupt', backups: [r.id] },
      { object: rel(blockFiles[1]!), problem: 'missing', backups: [r.id] },
    ].sort((x, y) => (x.object < y.object ? -1 : 1)));
    const job = await a.bm.jobs.wait(a.bm.restore({ target: 't', id: r.id, volume: 'back' }).id);
    expect(job.state).toBe('failed');
    expect(job.error?.code).toBe('BACKUP_CORRUPT');
    expect(job.error?.message).toMatch(/block \d \(offset \d+\) of backup .*: object blocks\/..\/[0-9a-f]{64} (is missing|does not match its hash)/);
    expect(a.store.listVolumes().map((x) => x.name)).toEqual(['v']);
  });

  it('encrypted: names are keyed, content unreadable, no key or another key is refused', async () => {
    const keyDir = tempDir('snapnbd-key-');
    dirs.push(keyDir);
    writeFileSync(join(keyDir, 'k'), randomBytes(32).toString('hex'));
    writeFileSync(join(keyDir, 'other'), randomBytes(32));
    const a = await server({ t: `file://${target}?encrypt=${join(keyDir, 'k')}` });
    await a.reg.createVolume({ name: 'v', size: 2 * MiB });
    const data = Buffer.alloc(MiB, 'secret-text ');
    await a.store.head('v').write(0, data, { fua: false });
    await a.reg.createSnapshot('v', 's', undefined);
    const r = await run<BackupResult>(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's' }).id);
    const files = readdirSync(join(target, 'blocks'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
    expect(files.length).toBe(1);
    const { createHash } = await import('node:crypto');
    expect(files[0]!.name).not.toBe(createHash('sha256').update(data).digest('hex'));
    expect(readFileSync(join(files[0]!.parentPath, files[0]!.name)).includes(Buffer.from('secret-text'))).toBe(false);
    const b = await server({ t: `file://${target}?encrypt=${join(keyDir, 'k')}` });
    await run(b.bm, b.bm.restore({ target: 't', id: r.id, volume: 'back' }).id);
    expect((await read(b.store, 'back', null)).equals(await read(a.store, 'v', 's'))).toBe(true);
    const noKey = await server({ t: `file://${target}` });
    await expect(noKey.bm.list({ target: 't' })).rejects.toThrow(/is encrypted: give its key file/);
    const wrong = await server({ t: `file://${target}?encrypt=${join(keyDir, 'other')}` });
    await expect(wrong.bm.list({ target: 't' })).rejects.toThrow(/encrypted with another key/);
  });

  it('a snapshot being backed up cannot be deleted until the job is cancelled', async () => {
    // Paced to take seconds, so the job is still running when cancelled on any machine.
    const a = await server({ t: `file://${target}?upload-limit=16M` });
    await a.reg.createVolume({ name: 'v', size: 64 * MiB });
    await a.store.head('v').write(0, randomBytes(64 * MiB), { fua: false });
    await a.reg.createSnapshot('v', 's', undefined);
    const job = a.bm.create({ target: 't', volume: 'v', snapshot: 's' });
    await expect(a.reg.deleteSnapshot('v', 's')).rejects.toMatchObject({ code: 'SNAPSHOT_BUSY' });
    expect(a.reg.listSnapshots('v')[0]!.backup).toMatch(/^backing-up \d+%$/);
    a.bm.jobs.cancel(job.id);
    const end = await a.bm.jobs.wait(job.id);
    expect(end.state).toBe('cancelled');
    expect(a.reg.listSnapshots('v')[0]!.backup).toBe('failed: cancelled');
    await a.reg.deleteSnapshot('v', 's');
    expect(await a.bm.list({ target: 't' })).toEqual([]);
  });

  it('prune keeps the policy, gc frees only unreferenced blocks, and the rest restores exactly', async () => {
    const a = await server({ t: `file://${target}` });
    await a.reg.createVolume({ name: 'v', size: 8 * MiB });
    const head = a.store.head('v');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      await head.write(i * MiB, randomBytes(MiB), { fua: false });
      await a.reg.createSnapshot('v', `s${i}`, undefined);
      ids.push((await run<BackupResult>(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: `s${i}` }).id)).id);
    }
    await head.write(0, randomBytes(MiB), { fua: false }); // block 0 of s0 is now only in s0's backup
    const policy = { keepLast: 2, keepDaily: 0, keepWeekly: 0, keepMonthly: 0 };
    const dry = await a.bm.prune({ target: 't', volume: 'v', policy, dryRun: true, graceMs: 0 });
    expect(dry.deleted).toEqual(ids.slice(0, 3));
    expect((await a.bm.list({ target: 't' })).length).toBe(5);
    const real = await a.bm.prune({ target: 't', volume: 'v', policy, dryRun: false, graceMs: 0 });
    expect(real.kept).toEqual(ids.slice(3));
    expect(real.gc.blocksDeleted).toBe(0); // every block of s0..s2 is still named by s3 or s4
    await a.bm.delete({ target: 't', id: ids[3]! });
    await head.write(MiB, randomBytes(MiB), { fua: false });
    await a.reg.createSnapshot('v', 's5', undefined);
    await run(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's5' }).id);
    const gc = await a.bm.prune({ target: 't', volume: 'v', policy: { ...policy, keepLast: 1 }, dryRun: false, graceMs: 0 });
    expect(gc.gc.blocksDeleted).toBe(2); // s4's blocks 0 and 1, both rewritten before s5
    const b = await server({ t: `file://${target}` });
    for (const bk of await b.bm.list({ target: 't' })) {
      await run(b.bm, b.bm.restore({ target: 't', id: bk.id, volume: `r-${bk.snapshot}` }).id);
      expect((await read(b.store, `r-${bk.snapshot}`, null)).equals(await read(a.store, 'v', bk.snapshot))).toBe(true);
    }
  });

  it('garbage collection with another writer: a live marker skips the sweep, a stale one is removed, young blocks survive the grace', async () => {
    const a = await server({ t: `file://${target}` });
    await a.reg.createVolume({ name: 'v', size: 4 * MiB });
    const head = a.store.head('v');
    await head.write(0, randomBytes(MiB), { fua: false });
    await a.reg.createSnapshot('v', 's1', undefined);
    const first = await run<BackupResult>(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's1' }).id);
    await head.write(0, randomBytes(MiB), { fua: false });
    await a.reg.createSnapshot('v', 's2', undefined);
    await run(a.bm, a.bm.create({ target: 't', volume: 'v', snapshot: 's2' }).id);
    await a.bm.delete({ target: 't', id: first.id }); // s1's block is now garbage
    mkdirSync(join(target, 'inprogress'), { recursive: true });
    const marker = join(target, 'inprogress', '20261130T000000000Z-00000000');
    writeFileSync(marker, JSON.stringify({ id: 'other-server-backup' }));
    const policy = { keepLast: 5, keepDaily: 0, keepWeekly: 0, keepMonthly: 0 };
    const skipped = await a.bm.prune({ target: 't', volume: 'v', policy, dryRun: false, graceMs: 0 });
    expect(skipped.gc.skipped).toMatch(/in progress: other-server-backup/);
    expect(skipped.gc.blocksDeleted).toBe(0);
    const young = await a.bm.prune({ target: 't', volume: 'v', policy, dryRun: false, graceMs: 3_600_000 });
    expect(young.gc.skipped).toMatch(/in progress/); // still live
    const old = new Date(Date.now() - 2 * 3_600_000);
    utimesSync(marker, old, old);
    const graced = await a.bm.prune({ target: 't', volume: 'v', policy, dryRun: false, graceMs: 3_600_000 });
    expect(graced.gc).toMatchObject({ skipped: null, staleMarkersRemoved: 1, blocksDeleted: 0 }); // the garbage block is younger than the grace
    expect(existsSync(marker)).toBe(false);
    const swept = await a.bm.prune({ target: 't', volume: 'v', policy, dryRun: false, graceMs: 0 });
    expect(swept.gc).toMatchObject({ skipped: null, blocksDeleted: 1 });
  });

  it('a backup that starts while a collection holds the target waits for it to end', async () => {
    const a = await server({ t: `file://${target}` });
    await a.reg.createVolume({ name: 'v', size: 2 * MiB });
    await a.store.head('v').write(0, randomBytes(MiB), { fua: false });
    await a.reg.createSnapshot('v', 's', undefined);
    expect((await a.bm.list({ target: 't' })).length).toBe(0); // creates the target's config
    writeFileSync(join(target, 'gc.lock'), '{}');
    const job = a.bm.create({ target: 't', volume: 'v', snapshot: 's' });
    await new Promise((r) => setTimeout(r, 1500));
    expect(a.bm.jobs.get(job.id).state).toBe('running');
    expect(existsSync(join(target, 'blocks'))).toBe(false);
    expect(readdirSync(join(target, 'inprogress')).length).toBe(1); // its marker came first
    rmSync(join(target, 'gc.lock'));
    expect((await a.bm.jobs.wait(job.id)).state).toBe('done');
    expect(readdirSync(join(target, 'inprogress')).length).toBe(0);
  });
});
