// Garbage collection of blocks no manifest names, safe with several writers on one target.
//
// Why it never deletes a block a backup is about to name (README "Garbage collection"):
//   1. A backup writes its marker inprogress/ID before it decides anything, then waits while
//      gc.lock exists; only then does it read manifests and look up blocks.
//   2. The collector writes gc.lock, then lists markers. A live marker (rewritten within
//      GC_STALE_MS) makes it skip the sweep.
//   With a strongly consistent store (S3 and RGW are), either the backup's marker was written
//   before the collector listed markers (the sweep is skipped), or the backup checked for the
//   lock after the collector wrote it (the backup waits until the sweep is over, and then sees
//   its result). A backup that lost its heartbeat for GC_STALE_MS/2 refuses to write its manifest.
//   3. Belt and braces: only blocks older than the grace period are swept, so a block uploaded
//      just now by a writer we failed to see survives this pass.
import { BackupError, BackupErrorCode } from './errors.ts';
import { checkAborted } from './pool.ts';
import { GC_LOCK_KEY, type Repository } from './repository.ts';

/** A marker or lock not rewritten for this long belongs to a process that died. */
export const GC_STALE_MS = 60 * 60 * 1000;
/** Blocks younger than this are never swept. */
export const GC_GRACE_MS_DEFAULT = 60 * 60 * 1000;
const GC_WAIT_POLL_MS = 1000;

export interface GcResult {
  /** Why the sweep did not run, or null. */
  skipped: string | null;
  blocksDeleted: number;
  bytesFreed: number;
  blocksKept: number;
  staleMarkersRemoved: number;
}

/** Waits while a live collector holds the target (backups call this after writing their marker). */
export async function waitForGc(repo: Repository, signal?: AbortSignal, staleMs = GC_STALE_MS): Promise<void> {
  for (;;) {
    checkAborted(signal);
    const lock = await repo.gcLock();
    if (lock === null || Date.now() - lock.lastModified.getTime() > staleMs) return;
    await new Promise((r) => setTimeout(r, GC_WAIT_POLL_MS));
  }
}

export async function collectGarbage(repo: Repository, opts: { graceMs: number; dryRun: boolean; source: string; signal?: AbortSignal }): Promise<GcResult> {
  const result: GcResult = { skipped: null, blocksDeleted: 0, bytesFreed: 0, blocksKept: 0, staleMarkersRemoved: 0 };
  const lock = await repo.gcLock();
  if (lock !== null && Date.now() - lock.lastModified.getTime() <= GC_STALE_MS) {
    result.skipped = 'another garbage collection is running on this target';
    return result;
  }
  if (!opts.dryRun) await repo.store.put(GC_LOCK_KEY, Buffer.from(JSON.stringify({ source: opts.source, started: new Date().toISOString() })));
  try {
    const started = Date.now();
    const live: string[] = [];
    for (const m of await repo.markers()) {
      if (started - m.lastModified.getTime() <= GC_STALE_MS) live.push(m.info?.id ?? m.key);
      else if (!opts.dryRun) {
        await repo.store.delete(m.key);
        result.staleMarkersRemoved++;
      }
    }
    if (live.length > 0) {
      result.skipped = `backup(s) in progress: ${live.join(', ')}`;
      return result;
    }
    const referenced = new Set<string>();
    for (const id of await repo.manifestIds()) {
      checkAborted(opts.signal);
      const m = await repo.getManifest(id);
      if (m === null) continue;
      for (const b of m.blocks) if (b !== null) referenced.add(b);
    }
    for await (const b of repo.listBlocks()) {
      checkAborted(opts.signal);
      if (referenced.has(b.name) || started - b.lastModified.getTime() < opts.graceMs) {
        result.blocksKept++;
        continue;
      }
      if (!opts.dryRun) await repo.store.delete(b.key);
      result.blocksDeleted++;
      result.bytesFreed += b.size;
    }
    return result;
  } catch (e) {
    if (e instanceof BackupError) throw e;
    throw new BackupError(BackupErrorCode.TargetUnavailable, `garbage collection on ${repo.store.display}: ${(e as Error).message}`, { cause: e });
  } finally {
    if (!opts.dryRun) await repo.store.delete(GC_LOCK_KEY).catch(() => undefined);
  }
}
