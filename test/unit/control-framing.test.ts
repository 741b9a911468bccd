// The control socket's line splitter: any split of the input gives the same frames; oversize
// lines are reported once and skipped to their newline; nothing else is disturbed.
import { describe, expect, it } from 'vitest';
import { LineSplitter, MAX_LINE_BYTES, type Frame } from '../../src/control/framing.ts';
import { prng } from '../../src/storage/sim-file-io.ts';
import { runSeeds } from '../helpers/prng.ts';

function feed(s: LineSplitter, input: Buffer, cuts: number[]): Frame[] {
  const out: Frame[] = [];
  let at = 0;
  for (const c of [...cuts, input.length]) {
    out.push(...s.push(input.subarray(at, c)));
    at = c;
  }
  out.push(...s.end());
  return out;
}

describe('LineSplitter', () => {
  it('splits lines, strips CR, keeps blank lines as empty lines and an unterminated tail at end', () => {
    const s = new LineSplitter(100);
    expect(feed(s, Buffer.from('{"a":1}\r\n\nxyz\ntail'), [])).toEqual([
      { kind: 'line', text: '{"a":1}' }, { kind: 'line', text: '' }, { kind: 'line', text: 'xyz' }, { kind: 'line', text: 'tail' },
    ]);
  });

  it('reports an oversize line once and resumes after its newline', () => {
    const s = new LineSplitter(10);
    const input = Buffer.from(`short\n${'x'.repeat(25)}\nnext\n${'y'.repeat(11)}`);
    expect(feed(s, input, [])).toEqual([
      { kind: 'line', text: 'short' }, { kind: 'oversize' }, { kind: 'line', text: 'next' }, { kind: 'oversize' },
    ]);
  });

  it('accepts a line of exactly the cap and refuses one byte more', () => {
    const s = new LineSplitter(8);
    expect(feed(s, Buffer.from('12345678\n123456789\nok\n'), [4, 8, 9, 13])).toEqual([
      { kind: 'line', text: '12345678' }, { kind: 'oversize' }, { kind: 'line', text: 'ok' },
    ]);
  });

  it('gives the same frames for any split of the input (seeded)', () => {
    // Seeds 0..299 every run, then 300 from a fresh base (printed).
    const fresh = runSeeds('line splitter', [0]).at(-1)!.seed;
    const lines = ['{"jsonrpc":"2.0","id":1,"method":"volume.list"}', 'ünïcødé ✓ 🎉', '', 'z'.repeat(70), 'end'];
    const input = Buffer.from(lines.join('\n') + '\n' + 'q'.repeat(200) + '\nafter\n');
    const expected = feed(new LineSplitter(64), input, []);
    expect(expected).toEqual([
      ...lines.map((t) => (t.length > 64 ? { kind: 'oversize' } : { kind: 'line', text: t })),
      { kind: 'oversize' }, { kind: 'line', text: 'after' },
    ]);
    for (let i = 0; i < 600; i++) {
      const seed = i < 300 ? i : fresh + i;
      const rnd = prng(seed);
      const cuts = new Set<number>();
      const n = Math.floor(rnd() * 20);
      for (let k = 0; k < n; k++) cuts.add(Math.floor(rnd() * input.length));
      const got = feed(new LineSplitter(64), input, [...cuts].sort((a, b) => a - b));
      expect(got, `seed ${seed}`).toEqual(expected);
    }
    // Byte at a time too: splits inside multi-byte characters must not corrupt them.
    const bytes = [...Array(input.length).keys()].slice(1);
    expect(feed(new LineSplitter(64), input, bytes)).toEqual(expected);
  });

  it('holds memory bounded while skipping a huge line', () => {
    const s = new LineSplitter(MAX_LINE_BYTES);
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    const frames: Frame[] = [];
    for (let i = 0; i < 40; i++) frames.push(...s.push(chunk)); // 10 MiB, no newline
    frames.push(...s.push(Buffer.from('\n{"ok":true}\n')));
    expect(frames).toEqual([{ kind: 'oversize' }, { kind: 'line', text: '{"ok":true}' }]);
    expect((s as unknown as { partLen: number }).partLen).toBe(0);
  });
});
