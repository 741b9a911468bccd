// Making one backup of a snapshot. The first backup of a volume reads every allocated block;
// a later one asks the engine which chunks changed since the volume's last backed-up snapshot
// (Store.diff) and reads only those: O(changed), never O(size). Every manifest still names every
// block. Zero blocks are recorded, never uploaded; blocks the target already has are not
// uploaded again (content addressing), which also makes a clone's backup share its origin's
// blocks and lets a retried backup upload only what is missing.
import { randomBytes } from 'node:crypto';
import type { Store } from '../storage/types.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { waitForGc, GC_STALE_MS } from './gc.ts';
import { newBackupId, MANIFEST_FORMAT, type Manifest } from './manifest.ts';
import { BlockBuffers } from './block-buffers.ts';
import { checkAborted, runPool } from './pool.ts';
import type { Repository } from './repository.ts';

/** Blocks read, hashed and uploaded at once. */
export const BACKUP_PARALLEL = 8;
/** Above this many blocks to look up, one listing of blocks/ is cheaper than a HEAD each. */
export const LIST_KNOWN_MIN = 256;
export const HEARTBEAT_MS = GC_STALE_MS / 6;

export interface Progress {
  bytesDone: number;
  bytesTotal: number;
}

export interface CreateOptions {
  store: Store;
  repo: Repository;
  volume: string;
  snapshot: string;
  /** host:dataDir, the identity of this server's snapshots. */
  source: string;
  signal?: AbortSignal;
  progress?: (p: Progress) => void;
  now?: () => Date;
}

export interface BackupResult {
  id: string;
  volume: string;
  snapshot: string;
  state: 'backed-up';
  base: string | null;
  size: number;
  bytesRead: number;
  bytesUploaded: number;
  blocksUploaded: number;
  blocksReused: number;
  blocksZero: number;
}

/** Compared against with memcmp: a byte loop in JavaScript cost ~1 ms per zero MiB. */
const ZEROS = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - i);
    if (!b.subarray(i, i + n).equals(n === ZEROS.length ? ZEROS : ZEROS.subarray(0, n))) return false;
  }
  return true;
}

/** The newest backup of this volume, from this server, whose snapshot still exists here unchanged. */
async function findBase(o: CreateOptions, size: number): Promise<{ manifest: Manifest; snapshot: string } | null> {
  const local = new Map(o.store.listSnapshots(o.volume).map((s) => [s.name, s.created]));
  let best: Manifest | null = null;
  for (const id of await o.repo.manifestIds()) {
    const m = await o.repo.getManifest(id).catch(() => null);
    if (!m || m.volume !== o.volume || m.source !== o.source || m.size !== size || m.blockSize !== o.repo.blockSize) continue;
    if (m.snapshot === o.snapshot || local.get(m.snapshot) !== m.snapshotCreated) continue;
    if (best === null || m.snapshotCreated > best.snapshotCreated) best = m;
  }
  return best ? { manifest: best, snapshot: best.snapshot } : null;
}

export async function createBackup(o: CreateOptions): Promise<BackupResult> {
  const now = o.now ?? (() => new Date());
  const snap = o.store.snapshotInfo(o.volume, o.snapshot);
  const vol = o.store.volumeInfo(o.volume);
  const bs = o.repo.blockSize;
  const id = newBackupId(now(), randomBytes(4).toString('hex'));
  const marker = { id, volume: o.volume, snapshot: o.snapshot, source: o.source, started: now().toISOString() };
  await o.repo.putMarker(marker);
  let lastBeat = Date.now();
  let beatError: unknown = null;
  let beating: Promise<void> = Promise.resolve();
  const beat = setInterval(() => {
    beating = o.repo.putMarker(marker).then(() => { lastBeat = Date.now(); }, (e: unknown) => { beatError = e; });
  }, HEARTBEAT_MS);
  try {
    // After our marker is visible: a GC that started before it may still sweep; wait it out.
    await waitForGc(o.repo, o.signal);
    const base = await findBase(o, snap.size);
    const n = Math.ceil(snap.size / bs);
    const blocks: (string | null | undefined)[] = new Array<string | null | undefined>(n).fill(undefined);
    let toRead: number[];
    let reusedFromBase = 0;
    if (base) {
      const changed = new Set<number>();
      let start: number | null = 0;
      while (start !== null) {
        checkAborted(o.signal);
        const page = await o.store.diff(o.volume, base.snapshot, o.snapshot, { start });
        for (const e of page.extents) {
          for (let b = Math.floor(e.offset / bs); b * bs < e.offset + e.length; b++) changed.add(b);
        }
        start = page.next;
      }
      toRead = [];
      for (let i = 0; i < n; i++) {
        if (changed.has(i)) toRead.push(i);
        else {
          blocks[i] = base.manifest.blocks[i];
          if (blocks[i] !== null) reusedFromBase++;
        }
      }
    } else {
      toRead = Array.from({ length: n }, (_, i) => i);
    }
    const known = toRead.length > LIST_KNOWN_MIN ? new Set<string>() : null;
    if (known) for await (const b of o.repo.listBlocks()) known.add(b.name);
    const sent = new Map<string, Promise<void>>();
    const view = o.store.snapshotView(o.volume, o.snapshot, { background: true }); // a bulk copy: never on the loop
    const r = { bytesRead: 0, bytesUploaded: 0, blocksUploaded: 0, blocksReused: 0, blocksZero: 0 };
    const total = toRead.reduce((s, i) => s + Math.min(bs, snap.size - i * bs), 0);
    let done = 0;
    const buffers = new BlockBuffers(bs);
    await runPool(toRead, BACKUP_PARALLEL, o.signal, async (i) => {
      const off = i * bs;
      const len = Math.min(bs, snap.size - off);
      const extents = await view.extents(off, len);
      let covered = 0;
      let allZero = true;
      for (const e of extents) { covered += e.length; if (!e.zero) allZero = false; }
      if (allZero && covered >= len) {
        blocks[i] = null;
        r.blocksZero++;
      } else {
        const whole = buffers.take();
        await view.read(off, len, whole);
        r.bytesRead += len;
        if (isZero(whole.subarray(0, len))) {
          blocks[i] = null;
          r.blocksZero++;
          buffers.give(whole);
        } else {
          // Hashed in a worker: `whole` moves there and back, `buf` is the same memory after.
          const { hex: name, data: buf } = await o.repo.nameBlock(len === bs ? whole : whole.subarray(0, len));
          blocks[i] = name;
          const pending = sent.get(name);
          if (pending) {
            await pending;
            r.blocksReused++;
          } else if (known ? known.has(name) : await o.repo.hasBlock(name, o.signal)) {
            r.blocksReused++;
          } else {
            const p = o.repo.putBlock(name, buf, o.signal);
            sent.set(name, p);
            await p;
            r.bytesUploaded += len;
            r.blocksUploaded++;
          }
          buffers.give(buf);
        }
      }
      done += len;
      o.progress?.({ bytesDone: done, bytesTotal: total });
    });
    checkAborted(o.signal);
    if (beatError !== null || Date.now() - lastBeat > GC_STALE_MS / 2) {
      // Our marker may look abandoned to a collector: the blocks we reuse are not protected.
      throw new BackupError(BackupErrorCode.TargetUnavailable, `backup ${id}: could not keep its in-progress marker fresh on ${o.repo.store.display}`, { cause: beatError });
    }
    const manifest: Manifest = {
      format: MANIFEST_FORMAT, id, volume: o.volume, snapshot: o.snapshot, snapshotCreated: snap.created,
      size: snap.size, chunkSize: vol.chunkSize, blockSize: bs, created: now().toISOString(), source: o.source,
      base: base?.manifest.id ?? null, blocks: blocks.map((b) => b ?? null),
      bytesUploaded: r.bytesUploaded, blocksReused: r.blocksReused + reusedFromBase,
    };
    await o.repo.putManifest(manifest, o.signal);
    return {
      id, volume: o.volume, snapshot: o.snapshot, state: 'backed-up', base: manifest.base, size: snap.size,
      ...r, blocksReused: manifest.blocksReused,
    };
  } finally {
    clearInterval(beat);
    await beating; // a heartbeat still in flight would write the marker back after its delete
    await o.repo.deleteMarker(id).catch(() => undefined);
  }
}
