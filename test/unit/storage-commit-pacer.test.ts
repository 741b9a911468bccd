// The background commit's pacing (src/storage/commit-pacer.ts): metadata waits while writers keep
// logging more, and is committed at the first quiet tick, after COMMIT_DEFER_TICKS_MAX ticks, or
// once COMMIT_DEFER_BYTES_MAX bytes wait. Ticks are driven by hand: no timing in the assertions.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { COMMIT_DEFER_BYTES_MAX, COMMIT_DEFER_TICKS_MAX, CommitPacer } from '../../src/storage/commit-pacer.ts';
import { openCowStore } from '../../src/storage/index.ts';

describe('CommitPacer', () => {
  it('commits nothing when nothing waits', () => {
    const p = new CommitPacer();
    for (let i = 0; i < 3 * COMMIT_DEFER_TICKS_MAX; i++) expect(p.due(false, 0, 0)).toBe(false);
  });

  it('commits at the first tick after the writers paused', () => {
    const p = new CommitPacer();
    expect(p.due(true, 100, 100)).toBe(false); // records arrived since the last tick: busy
    expect(p.due(true, 100, 100)).toBe(true); // none since: quiet
  });

  it('defers while records keep arriving, at most COMMIT_DEFER_TICKS_MAX ticks', () => {
    const p = new CommitPacer();
    let logged = 0;
    const decisions: boolean[] = [];
    for (let i = 0; i < 2 * COMMIT_DEFER_TICKS_MAX; i++) {
      logged += 1000;
      decisions.push(p.due(true, logged, 1000));
    }
    const at = decisions.indexOf(true);
    expect(at).toBe(COMMIT_DEFER_TICKS_MAX - 1);
    // The count starts again after that commit.
    expect(decisions.lastIndexOf(true)).toBe(2 * COMMIT_DEFER_TICKS_MAX - 1);
    expect(decisions.filter((d) => d)).toHaveLength(2);
  });

  it('commits at once when the waiting records pass the memory bound', () => {
    const p = new CommitPacer();
    expect(p.due(true, COMMIT_DEFER_BYTES_MAX - 1, COMMIT_DEFER_BYTES_MAX - 1)).toBe(false);
    expect(p.due(true, 2 * COMMIT_DEFER_BYTES_MAX, COMMIT_DEFER_BYTES_MAX + 1)).toBe(true);
  });

  it('a tick with nothing pending resets the wait', () => {
    const p = new CommitPacer();
    let logged = 0;
    for (let i = 0; i < COMMIT_DEFER_TICKS_MAX - 1; i++) expect(p.due(true, (logged += 10), 10)).toBe(false);
    expect(p.due(false, logged, 0)).toBe(false); // a FLUSH committed everything meanwhile
    for (let i = 0; i < COMMIT_DEFER_TICKS_MAX - 1; i++) expect(p.due(true, (logged += 10), 10)).toBe(false);
  });
});

describe('the background commit of a store', () => {
  it('makes metadata durable once the writer stops, without a FLUSH', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'snapnbd-pacer-'));
    let commits = 0;
    const s = await openCowStore(join(dir, 's'), {
      commitIntervalMs: 20, segmentBytes: 1024 * 1024,
      observer: { commit: () => { commits++; }, compactionPass: () => undefined },
    });
    try {
      await s.createVolume({ name: 'v', size: 1024 * 1024 });
      const before = commits;
      await s.head('v').write(0, Buffer.alloc(65536, 7), { fua: false });
      // No FLUSH: the timer alone must commit the write's map record (waits for it, no time bound).
      for (let i = 0; commits === before && i < 1000; i++) await new Promise((r) => setTimeout(r, 20));
      expect(commits).toBeGreaterThan(before);
    } finally {
      await s.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
