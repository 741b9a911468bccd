// Volume resize (Store.resizeVolume; engine.ts runs it as a control operation holding the
// volume's write gate): the size rules, the shrink refusals, and the change itself as the
// journal sees it (README.md "On-disk format": the Resize record).
import type { Catalog, Volume } from './catalog.ts';
import type { DataPath } from './data-path.ts';
import type { Journal } from './journal.ts';
import { encodeResize } from './records.ts';
import { StoreError, StoreErrorCode } from './types.ts';

/** Largest map: 2^32 chunks (16 TiB at 4 KiB chunks, 256 TiB at 64 KiB). */
export const VOLUME_CHUNKS_MAX = 2 ** 32;

/** Throws INVALID_ARGUMENT when a volume of `size` would need more than VOLUME_CHUNKS_MAX chunks. */
export function checkChunkCount(size: number, chunkSize: number): void {
  if (Math.ceil(size / chunkSize) > VOLUME_CHUNKS_MAX) {
    throw new StoreError(StoreErrorCode.InvalidArgument,
      `volume size ${size} too large for chunk size ${chunkSize} (at most ${VOLUME_CHUNKS_MAX * chunkSize} bytes)`);
  }
}

/**
 * A cut is refused without `confirmed` (SHRINK_NOT_CONFIRMED: it discards data), and while a
 * snapshot of the volume is longer than the new size (VOLUME_HAS_SNAPSHOTS, naming them and
 * their clones): the head could no longer be rolled back to it whole.
 */
export function checkShrink(catalog: Catalog, vol: Volume, size: number, confirmed: boolean): void {
  if (!confirmed) {
    throw new StoreError(StoreErrorCode.ShrinkNotConfirmed,
      `volume '${vol.name}' is ${vol.size} bytes: shrinking it to ${size} discards everything past ${size}; confirm with --shrink (control: "shrink": true)`);
  }
  const longer = vol.snaps.filter((s) => s.size > size);
  if (longer.length === 0) return;
  const clones = longer.flatMap((s) => catalog.clonesOf(s).map((c) => `${c} (from ${vol.name}@${s.name})`));
  throw new StoreError(StoreErrorCode.VolumeHasSnapshots,
    `volume '${vol.name}' has ${longer.length} snapshot(s) longer than ${size} bytes (${longer.map((s) => `${s.name}: ${s.size}`).join(', ')}); ` +
    `delete them first` + (clones.length > 0 ? ` (clones made from them: ${clones.join(', ')})` : ''));
}

/**
 * The resize proper; the caller holds the volume's gate and checked the size. The Resize record
 * and the grown part's ZERO entries are logged in one synchronous step, so one commit takes
 * them all and a crash leaves the old size or the new one whole.
 */
export async function resizeHeld(store: { catalog: Catalog; dataPath: DataPath; journal: Pick<Journal, 'log'> }, vol: Volume, size: number): Promise<void> {
  const oldSize = vol.size;
  // The part of the last chunk past the old end reads zeros before the size takes it in (it may
  // hold backing bytes, or old data a shrink left there): a write invisible at the old size, so
  // it may commit alone.
  if (size > oldSize) await store.dataPath.zeroTailHeld(vol, oldSize);
  store.catalog.setVolumeSize(vol, size); // a cut unmaps the chunks past the end
  vol.device = null; // the next client gets a device of the new size; connected ones keep theirs
  store.journal.log(encodeResize(vol.id, size));
  if (size > oldSize) store.dataPath.zeroOverBacking(vol, oldSize, size); // records after Resize
}
