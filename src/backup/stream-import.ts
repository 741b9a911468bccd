// Applies a stream (protocol/stream.md) to the store. A full stream creates the volume; an
// incremental one applies onto a volume whose newest snapshot IS the stream's base (same
// identity, not only the same name) and whose head has not changed since. The new snapshot takes
// the stream's name and identity.
//
// All or nothing, by roll-back: each record is checked (CRC) before it is written, so no corrupt
// byte reaches the volume, and the snapshot is created only after the END record's SHA-256 and
// totals match and the input has ended. Any failure before that (a cut, a flipped byte, an ABORT,
// a storage error) undoes the import: a volume the stream created is deleted, a volume it applied
// onto is rolled back to the base (which is what its head held, as checked first). Staging the
// stream in full first would cost a second copy of its size; rolling back costs nothing. A server
// crash mid-import leaves what a crash leaves: the new volume without a snapshot, or the head
// with part of the change on top of the base (roll back to the base, or delete, and retry).
import { NAME_PATTERN, StoreError, StoreErrorCode, type Store } from '../storage/types.ts';
import { CodedError } from '../util/coded-error.ts';
import { StreamDecoder, StreamFormatError, type StreamHeader, type StreamTotals } from './stream-format.ts';

export const ImportErrorCode = {
  /** Incremental stream whose base is not the volume's newest snapshot (by identity). */
  WrongBase: 'WRONG_BASE',
  /** The volume's head was written after its newest snapshot: applying would mix contents. */
  HeadChanged: 'HEAD_CHANGED',
} as const;
export type ImportErrorCode = (typeof ImportErrorCode)[keyof typeof ImportErrorCode];

export class ImportError extends CodedError<ImportErrorCode> {
  override name = 'ImportError';
}

export interface ImportResult {
  volume: string;
  snapshot: string;
  guid: string;
  /** The base snapshot's name, null for a full stream. */
  base: string | null;
  /** The volume was created by this import. */
  created: boolean;
  bytes: number;
  records: number;
  dataBytes: number;
  zeroBytes: number;
}

/** Writes to the volume in flight at once (the stream's extents never overlap). */
export const IMPORT_WRITES_IN_FLIGHT = 8;

export type ImportStore = Pick<Store, 'volumeInfo' | 'listSnapshots' | 'createVolume' | 'deleteVolume' | 'head' | 'diff' | 'rollback' | 'createSnapshot' | 'flush'>;

function exists(f: () => unknown): boolean {
  try {
    f();
    return true;
  } catch (e) {
    if (e instanceof StoreError && (e.code === StoreErrorCode.VolumeNotFound || e.code === StoreErrorCode.SnapshotNotFound)) return false;
    throw e;
  }
}

/** Checks the header against the target and prepares it; returns the undo. */
async function prepare(store: ImportStore, name: string, h: StreamHeader): Promise<() => Promise<void>> {
  // Checked now, not when the snapshot is created after the whole stream was applied.
  if (!NAME_PATTERN.test(h.snapshot)) throw new StoreError(StoreErrorCode.InvalidName, `the stream's snapshot name '${h.snapshot}' is not a valid name`);
  if (h.base === null) {
    if (exists(() => store.volumeInfo(name))) {
      throw new StoreError(StoreErrorCode.NameTaken, `volume '${name}' exists; a full stream creates its volume (delete it, or import under another name)`);
    }
    await store.createVolume({ name, size: h.size, chunkSize: h.chunkSize });
    return () => store.deleteVolume(name);
  }
  const vol = store.volumeInfo(name);
  const snaps = store.listSnapshots(name);
  const newest = snaps[snaps.length - 1];
  if (!newest || newest.guid !== h.base.guid) {
    throw new ImportError(ImportErrorCode.WrongBase,
      `the stream applies on ${h.volume}@${h.base.name} (identity ${h.base.guid}); the newest snapshot of '${name}' is `
      + (newest ? `'${newest.name}' (identity ${newest.guid})` : 'none'));
  }
  if (vol.size !== h.size) {
    throw new StoreError(StoreErrorCode.InvalidArgument, `the stream's volume is ${h.size} bytes; '${name}' is ${vol.size}`);
  }
  if (snaps.some((s) => s.name === h.snapshot)) {
    throw new StoreError(StoreErrorCode.NameTaken, `snapshot '${name}@${h.snapshot}' exists`);
  }
  const changed = await store.diff(name, newest.name, null, { limit: 1 });
  if (changed.extents.length > 0) {
    throw new ImportError(ImportErrorCode.HeadChanged,
      `'${name}' was written after its snapshot '${newest.name}' (at offset ${changed.extents[0]!.offset}); roll it back to '${newest.name}' first`);
  }
  return () => store.rollback(name, newest.name);
}

/**
 * Reads the whole stream from `input` and applies it to volume `name`. Throws StreamFormatError,
 * ImportError or StoreError; after a throw nothing of the stream is left in the store.
 */
export async function importStream(store: ImportStore, name: string, input: AsyncIterable<Buffer>): Promise<ImportResult> {
  const dec = new StreamDecoder();
  let header: StreamHeader | null = null;
  let undo: (() => Promise<void>) | null = null;
  let totals: StreamTotals | null = null;
  let bytes = 0;
  // Writes run a few at a time; the first failure is kept and thrown at the next step.
  const inflight = new Set<Promise<void>>();
  let failure: { e: unknown } | null = null;
  const track = async (p: Promise<void>): Promise<void> => {
    const t: Promise<void> = p.then(() => { inflight.delete(t); }, (e: unknown) => {
      inflight.delete(t);
      failure ??= { e };
    });
    inflight.add(t);
    if (inflight.size >= IMPORT_WRITES_IN_FLIGHT) await Promise.race(inflight);
    if (failure) throw failure.e;
  };
  try {
    for await (const chunk of input) {
      bytes += chunk.length;
      const events = dec.push(chunk);
      if (events instanceof StreamFormatError) throw events;
      for (const ev of events) {
        switch (ev.kind) {
          case 'begin':
            header = ev.header;
            undo = await prepare(store, name, header);
            break;
          case 'data':
            await track(store.head(name).write(ev.offset, ev.data, { fua: false }));
            break;
          case 'zero':
            // A new volume reads zeros already; on an existing one the range must become zeros.
            if (header!.base !== null) await track(store.head(name).zero(ev.offset, ev.length, { fua: false, noHole: false, fast: false }));
            break;
          case 'end':
            totals = ev.totals;
            break;
          case 'skipped':
            break;
        }
      }
    }
    const err = dec.end();
    if (err) throw err;
    await Promise.all(inflight);
    if (failure) throw (failure as { e: unknown }).e;
    const h = header!;
    await store.flush();
    const snap = await store.createSnapshot(name, h.snapshot, h.description, h.guid);
    undo = null; // the snapshot exists: from here on the import has happened
    await store.flush();
    return {
      volume: name, snapshot: snap.name, guid: snap.guid, base: h.base?.name ?? null, created: h.base === null, bytes,
      records: totals!.records, dataBytes: totals!.dataBytes, zeroBytes: totals!.zeroBytes,
    };
  } catch (e) {
    await Promise.all(inflight); // never rejects: failures are kept apart
    if (undo) {
      try {
        await undo();
      } catch (u) {
        throw new Error(`${(e as Error).message}; undoing the import failed too: ${(u as Error).message}`, { cause: u });
      }
    }
    throw e;
  }
}
