// Restoring a backup into a new volume: every block fetched is checked against its name (the
// SHA-256, or keyed HMAC, of its bytes) before it is written; a mismatch or a missing object is
// an error naming the block and the object, and the half-made volume is deleted. Blocks are
// written behind the fetches (write-behind.ts).
import { StorageError, type BlockDevice } from '../storage/device.ts';
import { StoreError, StoreErrorCode } from '../storage/types.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import type { Manifest } from './manifest.ts';
import { BlockBuffers } from './block-buffers.ts';
import { runPool } from './pool.ts';
import { WriteBehind } from './write-behind.ts';
import type { Repository } from './repository.ts';
import type { Progress } from './create.ts';

export const RESTORE_PARALLEL = 8;

export interface RestoreOptions {
  repo: Repository;
  manifest: Manifest;
  /** The new volume's writable head, already created with the manifest's size. */
  device: BlockDevice;
  signal?: AbortSignal;
  progress?: (p: Progress) => void;
}

export interface RestoreResult {
  id: string;
  volume: string;
  bytesWritten: number;
  blocksFetched: number;
  blocksZero: number;
}

export async function restoreInto(o: RestoreOptions, newVolume: string): Promise<RestoreResult> {
  const m = o.manifest;
  const idx: number[] = [];
  m.blocks.forEach((b, i) => { if (b !== null) idx.push(i); });
  const total = idx.reduce((s, i) => s + Math.min(m.blockSize, m.size - i * m.blockSize), 0);
  let done = 0;
  const r: RestoreResult = { id: m.id, volume: newVolume, bytesWritten: 0, blocksFetched: 0, blocksZero: m.blocks.length - idx.length };
  const buffers = new BlockBuffers(o.repo.objectCapacity);
  const writer = new WriteBehind(o.device);
  try {
    await runPool(idx, RESTORE_PARALLEL, o.signal, async (i) => {
      const off = i * m.blockSize;
      const len = Math.min(m.blockSize, m.size - off);
      const what = `block ${i} (offset ${off}) of backup ${m.id}`;
      const data = await o.repo.getBlock(m.blocks[i]!, what, o.signal, buffers.take());
      if (data.length !== len) throw new BackupError(BackupErrorCode.BackupCorrupt, `${what}: object ${o.repo.blockKey(m.blocks[i]!)} holds ${data.length} bytes, expected ${len}`);
      await writer.write(off, data, () => {
        buffers.give(data);
        r.bytesWritten += len;
        r.blocksFetched++;
        done += len;
        o.progress?.({ bytesDone: done, bytesTotal: total });
      });
    });
  } catch (e) {
    await writer.settle(); // no write of this restore may still run when the caller removes the volume
    throw e;
  }
  await writer.finish();
  return r;
}

/** A local disk that fills up is said plainly (the engine's ENOSPC names the store, not the restore). */
export function restoreFailure(e: unknown, volume: string): unknown {
  if ((e instanceof StorageError && e.errno === 'ENOSPC') || (e instanceof StoreError && e.code === StoreErrorCode.NoSpace)) {
    return new StoreError(StoreErrorCode.NoSpace, `restore into '${volume}' stopped: the local disk is full (${(e as Error).message}); the partial volume was removed`, { cause: e });
  }
  return e;
}
