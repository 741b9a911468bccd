// Verifying a target: re-read blocks (all, or a random sample) and re-hash them; each bad or
// missing block is reported with every backup it breaks.
import { randomInt } from 'node:crypto';
import { BackupError, BackupErrorCode } from './errors.ts';
import { runPool } from './pool.ts';
import type { Repository } from './repository.ts';
import type { Progress } from './create.ts';

export const VERIFY_PARALLEL = 8;

export interface BadObject {
  object: string;
  problem: string;
  backups: string[];
}

export interface VerifyResult {
  backups: string[];
  blocksChecked: number;
  blocksTotal: number;
  ok: boolean;
  bad: BadObject[];
}

export async function verifyTarget(repo: Repository, opts: { id?: string; samplePct: number; signal?: AbortSignal; progress?: (p: Progress) => void }): Promise<VerifyResult> {
  const ids = opts.id !== undefined ? [opts.id] : await repo.manifestIds();
  const users = new Map<string, string[]>();
  const bad: BadObject[] = [];
  for (const id of ids) {
    let m;
    try {
      m = await repo.getManifest(id);
    } catch (e) {
      bad.push({ object: `manifests/${id}`, problem: (e as Error).message, backups: [id] });
      continue;
    }
    if (m === null) {
      bad.push({ object: `manifests/${id}`, problem: 'missing', backups: [id] });
      continue;
    }
    for (const b of m.blocks) {
      if (b === null) continue;
      const u = users.get(b);
      if (u) { if (u[u.length - 1] !== id) u.push(id); } else users.set(b, [id]);
    }
  }
  let names = [...users.keys()];
  if (opts.samplePct < 100) names = names.filter(() => randomInt(0, 1_000_000) < opts.samplePct * 10_000);
  let done = 0;
  await runPool(names, VERIFY_PARALLEL, opts.signal, async (name) => {
    try {
      await repo.getBlock(name, 'block', opts.signal);
    } catch (e) {
      if (!(e instanceof BackupError) || e.code !== BackupErrorCode.BackupCorrupt) throw e; // an outage is not a bad block
      const missing = /is missing/.test(e.message);
      bad.push({ object: repo.blockKey(name), problem: missing ? 'missing' : 'corrupt', backups: users.get(name)! });
    }
    done++;
    opts.progress?.({ bytesDone: done, bytesTotal: names.length });
  });
  bad.sort((a, b) => (a.object < b.object ? -1 : 1));
  return { backups: ids, blocksChecked: names.length, blocksTotal: users.size, ok: bad.length === 0, bad };
}
