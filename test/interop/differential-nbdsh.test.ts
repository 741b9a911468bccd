// Differential: one libnbd session (test/helpers/nbdsh-transcript.py) against nbdkit memory 64M
// and a snapnbd 64M volume. Every observation (flags, data after writes/zeroes/trims, allocation,
// error names for refused requests) must be the same on both.
//
// Deliberate differences, excluded by the script's "~" lines:
// - export name: nbdkit memory has one unnamed export and advertises no canonical name; snapnbd
//   names its volume.
// - block sizes: nbdkit 1.32 memory advertises none (libnbd reports 0); snapnbd advertises
//   1 / 4096 / 32 MiB as the issue requires.
// FAST_ZERO may be answered ENOTSUP by a backend that cannot zero fast; the script accepts both.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { REPO_ROOT } from '../helpers/server.ts';
import { withPeers } from '../helpers/peers.ts';
import { NBDSH_ENV, tool } from './tool.ts';

const SCRIPT = join(REPO_ROOT, 'test', 'helpers', 'nbdsh-transcript.py');

async function transcript(uri: string, structured: boolean): Promise<string[]> {
  const r = await tool('nbdsh', ['-n', '-c', `exec(open(${JSON.stringify(SCRIPT)}).read())`], {
    env: { ...NBDSH_ENV, NBD_URI: uri, NBD_STRUCTURED: structured ? '1' : '0' },
  });
  // The transcript, then what went wrong if the script stopped early.
  const lines = r.stdout.trimEnd().split('\n');
  if (r.code !== 0) lines.push(`exit ${r.code ?? r.signal}: ${r.stderr.trim()}`);
  return lines;
}

describe('differential nbdsh transcript: snapnbd vs nbdkit memory', () => {
  it.each([
    ['structured replies', true],
    ['simple replies only (the kernel client path)', false],
  ])('answers every request like nbdkit memory, %s', async (_label, structured) => {
    requires('nbdsh', 'nbdkit');
    const [kit, snap] = await withPeers(['nbdkit', 'snapnbd'], (uri) => transcript(uri, structured));
    const comparable = (t: string[]): string[] => t.filter((l) => !l.startsWith('~'));
    // The reference must have run to the end, or the comparison proves nothing.
    expect(kit!.at(-1)).toBe('done');
    expect(kit!.length).toBeGreaterThan(50);
    expect(kit).toContain(`structured ${structured ? 'True' : 'False'}`);
    expect(comparable(snap!).join('\n')).toBe(comparable(kit!).join('\n'));
    // The deliberate differences still hold what snapnbd promises.
    expect(snap).toContain('~block-size minimum 1');
    expect(snap).toContain('~block-size maximum 33554432');
    expect(snap).toContain("~export 'v'");
  });
});
