// server.stats gathers the store's figures in slices (accounting.ts storeStatsSliced): one stat per
// segment file and one look per slot are too long for one turn of the event loop with a fully
// written TiB. The sliced walk must yield, and answer what the one-turn walk answers.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { countLoopTurns, EverySlice } from '../helpers/loop-turns.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { callMethod } from '../../src/control/methods.ts';

const CHUNK = 65536;
const SEGMENT = 16 * CHUNK; // small segments: many files for a few MiB

describe('sliced store stats', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'snapnbd-stats-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('yields between files and answers what stats() answers', async () => {
    const s = await openCowStore(dir, { commitIntervalMs: 0, segmentBytes: SEGMENT });
    s.autoCompact = false;
    try {
      await s.createVolume({ name: 'v', size: 8 * SEGMENT, chunkSize: CHUNK });
      const dev = s.head('v');
      const buf = Buffer.alloc(CHUNK, 3);
      for (let c = 0; c < 8 * 16; c++) await dev.write(c * CHUNK, buf, { fua: false });
      await s.createSnapshot('v', 'a');
      await s.flush();
      const oneTurn = s.stats();
      expect(oneTurn.liveBytes).toBeGreaterThan(0);
      expect(oneTurn.allocatedBytes).toBeGreaterThan(oneTurn.liveBytes / 2);

      const slicer = new EverySlice();
      const turns = countLoopTurns();
      const sliced = await s.statsSliced(slicer);
      const ran = turns.stop();
      expect(sliced).toEqual(oneTurn);
      // Superblock, journal, every segment file, the slot blocks: a yield before each.
      const segments = s.inspect().chunkClass(CHUNK).segments.size;
      expect(segments).toBeGreaterThanOrEqual(8);
      expect(slicer.yields).toBeGreaterThanOrEqual(2 + segments + 1);
      expect(ran).toBeGreaterThan(0);
    } finally {
      await s.close();
    }
  });

  it('server.stats answers the sliced figures', async () => {
    const s = await openCowStore(dir, { commitIntervalMs: 0, segmentBytes: SEGMENT });
    s.autoCompact = false;
    try {
      await s.createVolume({ name: 'v', size: 4 * SEGMENT, chunkSize: CHUNK });
      await s.head('v').write(0, Buffer.alloc(4 * SEGMENT, 1), { fua: false });
      await s.flush();
      const registry = new VolumeRegistry(s, { defaultExport: 'v', readOnly: false });
      const r = await callMethod('server.stats', {}, { registry, serverInfo: () => ({ version: '', listeners: [], startedAt: new Date() }) }) as { store: unknown };
      expect(r.store).toEqual(s.stats());
      expect(r.store).toMatchObject({ liveBytes: 4 * SEGMENT, volumes: 1 });
    } finally {
      await s.close();
    }
  });
});
