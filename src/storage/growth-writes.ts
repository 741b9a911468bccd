// Writes that extend a segment file reach the file in pieces of at most GROWTH_WRITE_PIECE_BYTES,
// cut at multiples of that size in the file.
//
// Why: ext4 gives a buffered write into a new part of a file page-cache folios as large as the
// write (a 1 MiB pwritev at a 1 MiB boundary: one 1 MiB folio). On a VM whose balloon reports
// free memory to the host (free blocks of 2 MiB and more), such folios come from memory the host
// took back, and the copy into them pays a host fault per page; smaller folios come from
// fragments the host never took. Writing a fresh 1 GiB file in 1 MiB pwritevs cost 1.8-2.4 s of
// system time against 0.25-0.36 s in 64 KiB or 256 KiB pieces; overwriting the cached pages
// afterwards cost 95-107 ms (1 MiB folios), 110-117 (256 KiB), 136-226 (64 KiB): hence 256 KiB,
// and only past the file's end, where no cached folio exists yet (bench/README.md, w8/seqw).
import type { IoFile } from './file-io.ts';
import { gatherSlice, type Gather } from '../util/gather.ts';

export const GROWTH_WRITE_PIECE_BYTES = 256 * 1024;

/**
 * Writes `pieces` (`len` bytes in all) at `pos`: one pwritev, or, when the write extends the
 * file (`growing`) and spans more than one piece boundary's worth, one per piece, in order (a
 * failure stops before the next piece is submitted, so nothing is left in flight).
 */
export async function writeGrowing(f: IoFile, pieces: Gather, len: number, pos: number, growing: boolean, background = false): Promise<void> {
  if (!growing || len <= GROWTH_WRITE_PIECE_BYTES) return f.writev(pieces, pos, background);
  for (let done = 0; done < len;) {
    const at = pos + done;
    const n = Math.min(len - done, GROWTH_WRITE_PIECE_BYTES - (at % GROWTH_WRITE_PIECE_BYTES));
    await f.writev(gatherSlice(pieces, done, n), at, background);
    done += n;
  }
}
