// A control reply's JSON text is built in slices (src/control/json-sliced.ts): the text must be
// JSON.stringify's, byte for byte, and a long array must let the event loop run in between.
import { describe, expect, it } from 'vitest';
import { countLoopTurns, EverySlice } from '../helpers/loop-turns.ts';
import { JSON_SLICE_ITEMS, stringifySliced } from '../../src/control/json-sliced.ts';

const extents = (n: number): { offset: number; length: number }[] =>
  Array.from({ length: n }, (_, i) => ({ offset: i * 131072, length: 65536 }));

describe('stringifySliced', () => {
  const cases: [string, unknown][] = [
    ['a diff page longer than a slice', { jsonrpc: '2.0', id: 7, result: { volume: 'v', from: 'a', to: null, extents: extents(3 * JSON_SLICE_ITEMS + 5), next: '123' } }],
    ['exactly one slice', { result: { extents: extents(JSON_SLICE_ITEMS) } }],
    ['one past a slice', { result: { extents: extents(JSON_SLICE_ITEMS + 1) } }],
    ['long arrays of anything, nested', { a: Array.from({ length: 2500 }, (_, i) => (i % 3 === 0 ? null : i % 3 === 1 ? `s${i}é"\n` : [i, { x: undefined }])) }],
    ['what JSON.stringify leaves out or turns into null', { u: undefined, f: () => 1, s: Symbol('x'), arr: [undefined, () => 1, 1], big: Array.from({ length: 2000 }, () => undefined) }],
    ['toJSON and class instances', { when: new Date(0), m: new Map([[1, 2]]), n: Object.create(null) as object, deep: { deeper: { list: extents(3000) } } }],
    ['an empty object, an empty array, a batch', [{ id: 1, result: {} }, { id: 2, result: [] }]],
    ['scalars', 'text'],
  ];
  for (const [name, value] of cases) {
    it(`is JSON.stringify's text: ${name}`, async () => {
      expect(await stringifySliced(value, new EverySlice())).toBe(JSON.stringify(value));
      expect(await stringifySliced(value)).toBe(JSON.stringify(value));
    });
  }

  it('yields between slices of a long array, and other work runs meanwhile', async () => {
    const slicer = new EverySlice();
    const turns = countLoopTurns();
    const text = await stringifySliced({ result: { extents: extents(65536) } }, slicer);
    const ran = turns.stop();
    expect(JSON.parse(text).result.extents).toHaveLength(65536);
    expect(slicer.yields).toBe(65536 / JSON_SLICE_ITEMS);
    expect(ran).toBeGreaterThan(0);
  });
});
