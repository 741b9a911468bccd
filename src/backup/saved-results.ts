// The last results of the backup manager, kept across a restart in
// DATA_DIR/backup-state/results.json (state-files.ts writes it crash-safe): the job list (the
// last FINISHED_JOBS_MAX finished jobs, and the running ones, which a restart shows as failed:
// INTERRUPTED) and each snapshot's `failed: REASON` backup state with the snapshot's creation
// time (a snapshot deleted and made again under the same name does not inherit it). `backed-up`
// is not kept: it is read back from the targets (BackupManager.warm). A save runs when a job
// starts or ends; saves are serialized and coalesced.
import { join } from 'node:path';
import { log } from '../util/log.ts';
import type { JobView } from './jobs.ts';
import { readStateFile, stateDir, writeFileAtomic } from './state-files.ts';

export const RESULTS_FORMAT = 1;

export interface SavedSnapshotState {
  /** `VOLUME@SNAPSHOT` */
  key: string;
  created: string;
  state: string;
}

export interface Results {
  format: number;
  savedAt: string;
  jobs: JobView[];
  snapshots: SavedSnapshotState[];
}

export class SavedResults {
  readonly path: string;
  private readonly snapshot: () => Omit<Results, 'format' | 'savedAt'>;
  private chain: Promise<void> = Promise.resolve();
  private queued = false;

  constructor(dataDir: string, snapshot: () => Omit<Results, 'format' | 'savedAt'>) {
    this.path = join(stateDir(dataDir), 'results.json');
    this.snapshot = snapshot;
  }

  /** What an earlier run saved, or null (none, or unreadable: logged, never fatal). */
  load(): Results | null {
    try {
      const text = readStateFile(this.path);
      if (text === null) return null;
      const r = JSON.parse(text) as Results;
      if (r.format !== RESULTS_FORMAT || !Array.isArray(r.jobs) || !Array.isArray(r.snapshots) || typeof r.savedAt !== 'string') {
        throw new Error(`not a results file of format ${RESULTS_FORMAT}`);
      }
      return {
        format: RESULTS_FORMAT, savedAt: r.savedAt,
        jobs: r.jobs.filter((j) => typeof j?.id === 'string' && typeof j.state === 'string' && typeof j.kind === 'string'),
        snapshots: r.snapshots.filter((s) => typeof s?.key === 'string' && typeof s.created === 'string' && typeof s.state === 'string'),
      };
    } catch (e) {
      log.warn(`backup results: cannot read ${this.path} (${(e as Error).message}); earlier jobs are not listed`);
      return null;
    }
  }

  save(): Promise<void> {
    if (this.queued) return this.chain;
    this.queued = true;
    this.chain = this.chain.then(async () => {
      this.queued = false;
      const r: Results = { format: RESULTS_FORMAT, savedAt: new Date().toISOString(), ...this.snapshot() };
      await writeFileAtomic(this.path, JSON.stringify(r));
    }).catch((e: unknown) => log.warn(`backup results: cannot save ${this.path}`, e));
    return this.chain;
  }
}
