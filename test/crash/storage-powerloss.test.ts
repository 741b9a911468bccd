// Power loss at every named crash point of the commit, checkpoint and segment-reclaim protocols,
// with the simulated file system (unsynced writes lost, kept or torn). After each crash the
// store reopens and the harness checks DESIGN.md §3: committed writes read back, no sector shows
// data it never held, snapshots unchanged, control operations all-or-nothing, allocated = mapped.
// Replay: SEED=<n> npx vitest run test/crash/storage-powerloss.test.ts
import { describe, expect, it } from 'vitest';
import { CrashPoint } from '../../src/storage/file-io.ts';
import { Harness, runCheckOn, sha } from '../property/storage-model.ts';

const POINTS = [
  CrashPoint.DataWritten, CrashPoint.BeforeDataSync, CrashPoint.AfterDataSync, CrashPoint.JournalAppendMid,
  CrashPoint.BeforeJournalSync, CrashPoint.AfterJournalSync, CrashPoint.CheckpointWritten,
  CrashPoint.SuperblockWritten, CrashPoint.AfterSuperblockSync, CrashPoint.SegmentDeleted,
] as const;
const BASE_SEED = Number(process.env['SEED'] ?? 100);

describe('power loss at each crash point', () => {
  POINTS.forEach((point, i) => {
    it(point, async () => {
      const seed = BASE_SEED + i;
      // Small journal threshold: checkpoints (and their crash points) happen often.
      const h = new Harness({ seed, ops: 700, crashPoints: [point], armProbability: 0.08, journalCompactBytes: 24 * 1024 });
      try {
        await h.setup('/backing.img', async (p, b) => {
          const f = await h.io.open(p, 'create');
          await f.write(b, 0, b.length, 0);
          await f.datasync();
        });
        const before = sha(h.sim!.files.get('/backing.img')!.cur);
        await h.run();
        expect(h.crashes.filter((m) => m.includes(point)).length, `crashes at ${point}`).toBeGreaterThan(0);
        await runCheckOn(h);
        expect(sha(h.sim!.files.get('/backing.img')!.cur)).toBe(before);
      } catch (e) {
        console.error(`power-loss test failed: SEED=${seed} point=${point}; last ops:\n  ${h.log.slice(-15).join('\n  ')}`);
        throw e;
      }
    });
  });
});
