import { describe, expect, it } from 'vitest';
import { gatherCopy, gatherSlice } from '../../src/util/gather.ts';

const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + 3) & 0xff));

describe('gather lists', () => {
  it('gatherSlice gives views of exactly the asked range, for every range of an uneven list', () => {
    const all = bytes(40);
    const pieces = [all.subarray(0, 1), all.subarray(1, 14), all.subarray(14, 15), all.subarray(15, 40)];
    for (let from = 0; from <= 40; from++) {
      for (let len = 0; from + len <= 40; len++) {
        const views = gatherSlice(pieces, from, len);
        expect(Buffer.concat(views)).toEqual(all.subarray(from, from + len));
        for (const v of views) {
          expect(v.length).toBeGreaterThan(0);
          expect(v.buffer === all.buffer).toBe(true); // views, never copies
        }
        const into = Buffer.alloc(len + 3, 0xee);
        gatherCopy(pieces, from, len, into, 2);
        expect(into.subarray(2, 2 + len)).toEqual(all.subarray(from, from + len));
        expect(into[0]).toBe(0xee);
        expect(into[len + 2]).toBe(0xee);
      }
    }
  });

  it('a range past the end is an error, not a short list', () => {
    expect(() => gatherSlice([bytes(4), bytes(4)], 5, 4)).toThrow(RangeError);
  });
});
