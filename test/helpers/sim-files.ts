// Files set up on the simulated file system (src/storage/sim-file-io.ts) before a test opens a
// store on it: written and synced like an image a user left there, so a power cut keeps them.
import type { SimFileIo } from '../../src/storage/sim-file-io.ts';

/** `content` at `path` on `sim`, durable (data and directory entry synced). */
export async function durableSimFile(sim: SimFileIo, path: string, content: Buffer): Promise<void> {
  const f = await sim.open(path, 'create');
  await f.write(content, 0, content.length, 0);
  await f.datasync();
  await f.close();
  await sim.syncDir(path.slice(0, path.lastIndexOf('/') + 1) || '/');
}
