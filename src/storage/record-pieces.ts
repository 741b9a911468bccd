// Records written and read in bounded pieces, so that a checkpoint (128 MiB per TiB mapped) is
// never one buffer: the writer packs records into one reused piece and writes it at increasing
// offsets; the reader reads the journal a piece at a time and hands each whole record on,
// carrying a record cut by a piece's end over to the next piece. The bytes on disk are exactly
// the records back to back (the format is unchanged), and the reader stops where `scanRecords`
// (format.ts) would: at the first short, oversized or checksum-failing record.
import { crc32 } from 'node:zlib';
import type { IoFile } from './file-io.ts';
import { RECORD_HEADER_LEN, RECORD_MAX, RecordReader } from './format.ts';
import { Slicer } from '../util/slice.ts';

/** Bytes per piece read or written: the memory a checkpoint costs beyond the state itself. */
export const RECORD_PIECE_BYTES = 1024 * 1024;

/**
 * Writes `parts` back to back from offset `at`, through `piece` (filled, written, reused; a part
 * may span pieces; each part is copied whole before the next is asked for, so an iterator may
 * reuse one buffer for its parts). `afterPiece` runs after each full piece (a crash point).
 * Between parts it yields the event loop once `slicer` says a slice is used up.
 * Returns the end offset.
 */
export async function writeInPieces(parts: Iterable<Buffer>, piece: Buffer, at: number,
  write: (buf: Buffer, len: number, pos: number) => Promise<void>, afterPiece: () => void, slicer = new Slicer()): Promise<number> {
  let fill = 0;
  let pos = at;
  for (const part of parts) {
    // Encoding a piece's parts is the loop's time too (an L1 record walks every page index of
    // its node: 4 of them fill a piece at 1 TiB), so the walk yields between parts as well.
    if (slicer.due()) await slicer.yield();
    let from = 0;
    while (from < part.length) {
      const n = part.copy(piece, fill, from);
      from += n;
      fill += n;
      if (fill === piece.length) {
        await write(piece, fill, pos);
        pos += fill;
        fill = 0;
        afterPiece();
      }
    }
  }
  if (fill > 0) await write(piece, fill, pos);
  return pos + fill;
}

/** One intact record of a file: its offsets and a reader over its payload. */
export interface FileRecord {
  at: number;
  end: number;
  rec: RecordReader;
}

/**
 * Reads `file[from..limit)` in pieces of `pieceBytes` and calls `fn` for each intact record in
 * order, until the first short, oversized or checksum-failing record or until `fn` returns
 * false. Returns the offset just past the last record handed to `fn`. A record's payload stays
 * valid after `fn` returns (each piece is a fresh buffer), so a caller may keep records.
 */
export async function scanFileRecords(file: IoFile, from: number, limit: number, pieceBytes: number,
  fn: (r: FileRecord) => boolean): Promise<number> {
  let buf = Buffer.allocUnsafe(0);
  let base = from; // file offset of buf[0]
  let have = 0; // bytes of buf read
  let at = 0; // next record's offset in buf
  for (;;) {
    // Parse what the piece holds.
    while (at + RECORD_HEADER_LEN <= have) {
      const len = buf.readUInt32LE(at);
      if (len > RECORD_MAX) return base + at;
      const end = at + RECORD_HEADER_LEN + len;
      if (end > have) break;
      if (crc32(buf.subarray(at + 8, end)) !== buf.readUInt32LE(at + 4)) return base + at;
      const rec = new RecordReader(buf.readUInt8(at + 8), buf.subarray(at + RECORD_HEADER_LEN, end));
      if (!fn({ at: base + at, end: base + end, rec })) return base + end;
      at = end;
    }
    const next = base + have; // file offset of the first byte not read yet
    if (next >= limit) return base + at;
    // The next piece: the cut record's bytes first, then as much as fits (at least that record).
    const carry = have - at;
    const want = carry >= RECORD_HEADER_LEN ? RECORD_HEADER_LEN + buf.readUInt32LE(at) : 0;
    const nb = Buffer.allocUnsafe(Math.max(pieceBytes, want, carry + RECORD_HEADER_LEN));
    buf.copy(nb, 0, at, have);
    const toRead = Math.min(nb.length - carry, limit - next);
    let got = 0;
    while (got < toRead) {
      const n = await file.read(nb, carry + got, toRead - got, next + got);
      if (n === 0) break;
      got += n;
    }
    base += at;
    buf = nb;
    have = carry + got;
    at = 0;
    if (got < toRead) limit = base + have; // the file ended early
  }
}
