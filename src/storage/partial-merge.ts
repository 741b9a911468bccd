// Completes partial slots (partial-slots.ts) whose base nothing but them still holds: once the
// snapshot that shared the old chunk is gone, the base costs a whole chunk of space for a few
// blocks. The missing blocks are copied from the base into the partial slot, which becomes whole
// and lets its base go; a base that is partial itself (a chain) gives its valid blocks and its
// own base instead, so chains shorten as their snapshots are deleted. Runs at the start of each
// compactor pass (compactor.ts), so after the commits that free slots, as a control operation.
//
// While a slot is merged it holds one extra reference, a pin (ChunkClass.pin: no holder for the
// space counters), taken while the class's writes are held until in-flight ones drained (as a
// compaction pass starts): a head write to it is then not exclusive and redirects (to a partial
// slot over it, or merging through the read path), so no client write can race the copy into
// the slot's missing blocks, and the slot cannot be freed and reused under the copy. The copy
// lands before the `SlotValid` record; the commit syncs the data first, so a crash before it
// leaves the slot partial over its intact base.
import type { ChunkClass, DataStore } from './chunk-store.ts';
import { UNMAPPED } from './block-map.ts';
import type { Journal } from './journal.ts';
import { allValid, baseIsSlot, blocksOf, isValid, VALID_BLOCK, type PartialSlot } from './partial-slots.ts';
import { encodeSlotValid } from './records.ts';
import { holdAll, type WriteGate } from './write-gate.ts';

/** Partial slots merged per pass at most: bounded memory and I/O per control operation. */
export const MERGE_BATCH_SLOTS = 256;

/** Merges the partial slots of `cls` whose base only they hold; returns how many became whole. */
export async function mergeOrphanedPartials(cls: ChunkClass, chunks: Pick<DataStore, 'read' | 'write'>, journal: Pick<Journal, 'log'>,
  gates: WriteGate[]): Promise<number> {
  if (!hasOrphans(cls)) return 0;
  const release = await holdAll(gates);
  const batch: [number, PartialSlot][] = [];
  try {
    for (const [slot, p] of cls.partials.entries()) {
      if (!baseIsSlot(p.base) || cls.count(p.base) !== 1) continue; // still shared with a snapshot (or held twice); a backing base frees nothing
      batch.push([slot, p]);
      if (batch.length >= MERGE_BATCH_SLOTS) break;
    }
    for (const [slot] of batch) cls.pin(slot);
  } finally {
    release();
  }
  if (batch.length === 0) return 0;
  let merged = 0;
  try {
    const buf = Buffer.allocUnsafe(cls.chunkSize);
    for (const [slot, p] of batch) {
      // A base partial itself (a chain) gives only its valid blocks: the slot then lies over the
      // base's own base, one link shorter. Else every missing block comes from the base. Either
      // way no block the slot has is touched, so a reader of the slot sees the same bytes.
      const base = cls.partials.get(p.base);
      const n = blocksOf(cls.chunkSize);
      for (let b = 0; b < n; ) {
        const copy = (k: number): boolean => !isValid(p.bits, k) && (!base || isValid(base.bits, k));
        if (!copy(b)) {
          b++;
          continue;
        }
        let e = b;
        while (e < n && copy(e)) e++;
        const from = b * VALID_BLOCK;
        const len = (e - b) * VALID_BLOCK;
        await chunks.read(cls, p.base, from, len, buf, 0, true); // true: maintenance I/O (the pool)
        await chunks.write(cls, slot, from, buf, 0, len, true); // true: maintenance I/O (the pool)
        b = e;
      }
      // Still the same partial slot over the same base after the copy (else it stays for the
      // next pass).
      if (cls.partials.get(slot) !== p || cls.partials.get(p.base) !== base) continue;
      // Let go of meanwhile (a client write redirected past the pin, or an earlier merge of this
      // batch took its place in a chain): freed at the unpin below, and no record may name it.
      if (cls.freedButPinned().has(slot)) continue;
      if (base) {
        const bits = p.bits.map((w, i) => w | (base.bits[i] as number));
        if (!allValid(bits, cls.chunkSize)) {
          cls.partials.set(slot, base.base, bits, base.at); // takes the new base before the old goes
          journal.log(encodeSlotValid(cls.chunkSize, slot, base.base, bits, base.at));
          merged++;
          continue;
        }
      }
      cls.partials.clear(slot);
      journal.log(encodeSlotValid(cls.chunkSize, slot, UNMAPPED, null));
      merged++;
    }
  } finally {
    for (const [slot] of batch) cls.unpin(slot);
  }
  return merged;
}

function hasOrphans(cls: ChunkClass): boolean {
  for (const p of cls.partials.entries()) if (baseIsSlot(p[1].base) && cls.count(p[1].base) === 1) return true;
  return false;
}
