// A gather list: bytes that arrived in several buffers (a WRITE payload as the socket delivered
// it), used in place instead of being copied into one. Pure; no buffer is ever written to.

/** Bytes in order; each piece is a view the holder must not mutate. */
export type Gather = readonly Buffer[];

/** Views of [from, from+len) of the list (no copy); a range inside one piece gives one view. */
export function gatherSlice(pieces: Gather, from: number, len: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const p of pieces) {
    if (len === 0) break;
    const end = at + p.length;
    if (end > from) {
      const start = from - at;
      const n = Math.min(p.length - start, len);
      out.push(start === 0 && n === p.length ? p : p.subarray(start, start + n));
      from += n;
      len -= n;
    }
    at = end;
  }
  if (len > 0) throw new RangeError(`gather slice past the end (${len} bytes short)`);
  return out;
}

/** Copies [from, from+len) of the list into target[targetOff..]. */
export function gatherCopy(pieces: Gather, from: number, len: number, target: Buffer, targetOff: number): void {
  for (const p of gatherSlice(pieces, from, len)) targetOff += p.copy(target, targetOff);
}
