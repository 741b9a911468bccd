// A commit that starts while a data write is in flight (a FLUSH of another client, the periodic
// commit) swaps the dirty segments before the write's data lands. The write's map record goes to
// the next commit, which must sync that segment again: after a FLUSH and a power loss that keeps
// nothing unsynced, the data reads back.
import { describe, expect, it } from 'vitest';
import { checkStore } from '../../src/storage/check.ts';
import { openCowStore } from '../../src/storage/index.ts';
import { prng, SimFileIo } from '../../src/storage/sim-file-io.ts';
import { HoldFileIo } from '../helpers/hold-file-io.ts';

const CHUNK = 4096;
const OPTS = { commitIntervalMs: 0, segmentBytes: 16 * CHUNK };

describe('a commit during a data write', () => {
  it('does not leave the write unsynced for the commit that maps it', async () => {
    const sim = new SimFileIo();
    const hold = new HoldFileIo(sim);
    const store = await openCowStore('/s', { fileIo: hold, ...OPTS });
    store.autoCompact = false;
    await store.createVolume({ name: 'v', size: 16 * CHUNK, chunkSize: CHUNK });
    const dev = store.head('v');
    await dev.write(0, Buffer.alloc(CHUNK, 1), { fua: true }); // the segment file exists, synced
    const data = Buffer.alloc(CHUNK, 0xab);
    const held = hold.hold('.dat', 'write');
    const w = dev.write(CHUNK, data, { fua: false });
    await held.reached;
    const other = store.flush(); // swaps the dirty set now, while the data is not written yet
    held.release();
    await w;
    await other;
    await store.flush(); // the write's map record: this commit must sync its data
    store.abandon();
    sim.crash(prng(1), 'lose');
    const r = await openCowStore('/s', { fileIo: sim, ...OPTS });
    const got = Buffer.alloc(CHUNK);
    await r.head('v').read(CHUNK, CHUNK, got);
    expect(got.equals(data), 'the flushed write after a power loss').toBe(true);
    await r.close();
    expect((await checkStore('/s', { repair: false, fileIo: sim })).problems).toEqual([]);
  });
});
