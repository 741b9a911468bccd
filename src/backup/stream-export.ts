// Writes a snapshot as a stream (protocol/stream.md). A full stream covers the whole volume:
// DATA for allocated extents, ZERO/HOLE for the rest, from the snapshot's own extent map (never
// a read of unallocated space). An incremental stream covers only what the engine's diff between
// BASE and SNAP names, so its cost is O(changed). The caller writes the yielded buffers in order.
import type { BlockDevice } from '../storage/device.ts';
import { StoreError, StoreErrorCode, type Store } from '../storage/types.ts';
import { DATA_RECORD_BYTES, StreamWriter, type StreamHeader } from './stream-format.ts';

/** Diff extents asked for per page. */
export const EXPORT_DIFF_PAGE = 4096;
/** DATA records read ahead of the one being sent. */
export const EXPORT_READ_AHEAD = 4;

export interface ExportRequest {
  volume: string;
  snapshot: string;
  /** An older snapshot of the same volume: the stream holds only what changed since it. */
  since: string | null;
}

export type ExportStore = Pick<Store, 'volumeInfo' | 'snapshotInfo' | 'listSnapshots' | 'snapshotView' | 'diff'>;

/** Checks the request and builds the stream's header (throws StoreError before any byte is sent). */
export function exportHeader(store: ExportStore, req: ExportRequest): StreamHeader {
  const vol = store.volumeInfo(req.volume);
  const snap = store.snapshotInfo(req.volume, req.snapshot);
  let base: StreamHeader['base'] = null;
  if (req.since !== null) {
    const b = store.snapshotInfo(req.volume, req.since);
    const order = store.listSnapshots(req.volume).map((s) => s.name);
    if (order.indexOf(req.since) >= order.indexOf(req.snapshot)) {
      throw new StoreError(StoreErrorCode.InvalidArgument,
        `--since ${req.volume}@${req.since} is not older than ${req.volume}@${req.snapshot}`);
    }
    base = { name: b.name, guid: b.guid };
  }
  return {
    volume: vol.name, size: snap.size, chunkSize: vol.chunkSize, snapshot: snap.name, guid: snap.guid,
    createdMs: Date.parse(snap.created), description: snap.description, base,
  };
}

/**
 * The stream, as groups of buffers. A failure after the first byte yields an ABORT record (so a
 * reader refuses the stream with the reason) and then throws.
 */
export async function* exportStream(store: ExportStore, req: ExportRequest, header = exportHeader(store, req)): AsyncGenerator<Buffer[]> {
  const w = new StreamWriter();
  const view = store.snapshotView(req.volume, req.snapshot, { background: true }); // a bulk copy: never on the loop
  yield w.begin(header);
  try {
    if (req.since === null) {
      yield* extentsOf(w, view, 0, header.size);
    } else {
      let start: number | null = 0;
      while (start !== null) {
        const page = await store.diff(req.volume, req.since, req.snapshot, { start, limit: EXPORT_DIFF_PAGE });
        for (const e of page.extents) yield* extentsOf(w, view, e.offset, e.length);
        start = page.next;
      }
    }
  } catch (e) {
    yield w.abort(e instanceof Error ? e.message : String(e));
    throw e;
  }
  yield w.end();
}

/** Records for [offset, offset+length) of the snapshot, from its allocation map. */
async function* extentsOf(w: StreamWriter, view: BlockDevice, offset: number, length: number): AsyncGenerator<Buffer[]> {
  const end = offset + length;
  let pos = offset;
  while (pos < end) {
    const runs = await view.extents(pos, end - pos);
    if (runs.length === 0) throw new Error(`no extents reported at ${pos}`);
    for (const r of runs) {
      const runEnd = Math.min(pos + r.length, end);
      if (r.zero) {
        yield w.zero(pos, runEnd - pos, r.hole);
      } else {
        // Allocated data, or a hole that reads through to a backing file: the bytes are needed.
        // A few reads run ahead of the one being sent, so the disk and the socket overlap.
        const ahead: { at: number; buf: Buffer; done: Promise<void> }[] = [];
        let next = pos;
        const issue = (): void => {
          while (ahead.length < EXPORT_READ_AHEAD && next < runEnd) {
            const n = Math.min(DATA_RECORD_BYTES, runEnd - next);
            const buf = Buffer.allocUnsafe(n);
            const done = view.read(next, n, buf);
            done.catch(() => undefined); // awaited in order below; a later failure must not go unhandled
            ahead.push({ at: next, buf, done });
            next += n;
          }
        };
        issue();
        while (ahead.length > 0) {
          const r0 = ahead.shift()!;
          await r0.done;
          issue();
          yield w.data(r0.at, r0.buf);
        }
      }
      pos = runEnd;
      if (pos >= end) break;
    }
  }
}
