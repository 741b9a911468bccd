// The control methods of backups and jobs (protocol/control.md, "Backups"): each one a params
// schema and a handler over the backup manager. Long work (create, restore, verify) starts a job
// and answers at once with it, or with the job's result when `wait` is true.
import type { BackupManager } from '../backup/manager.ts';
import { BackupError, BackupErrorCode } from '../backup/errors.ts';
import type { RetentionPolicy } from '../backup/prune-policy.ts';
import type { JobView } from '../backup/jobs.ts';
import { invalidParams } from './errors.ts';
import { serviceMethod } from './service-method.ts';

/** The most backups a retention rule may keep (a typo like 1e9 is refused, not obeyed). */
export const KEEP_MAX = 100_000;
/** Longest grace period for prune, seconds (30 days). */
export const GRACE_MAX_S = 30 * 86_400;

interface BackupContext {
  backups?: BackupManager;
}

const method = serviceMethod((ctx: BackupContext) => ctx.backups,
  () => new BackupError(BackupErrorCode.UnknownTarget, 'this server has no backup targets (serve --backup-target NAME=URL)'));

const str = { type: 'string', required: true } as const;
const optStr = { type: 'string', required: false } as const;
const optBool = { type: 'boolean', required: false } as const;
const keep = { type: 'integer', required: false, min: 0, max: KEEP_MAX } as const;

function answer(bm: BackupManager, job: JobView, wait: boolean | undefined): unknown {
  return wait ? bm.jobs.result(job.id) : job;
}

export const BACKUP_METHODS = {
  'backup.targets': method({}, (_p, bm) => ({ targets: bm.targets() })),

  'backup.create': method({ target: str, volume: str, snapshot: str, wait: optBool }, (p, bm) =>
    answer(bm, bm.create({ target: p.target, volume: p.volume, snapshot: p.snapshot }), p.wait)),

  'backup.list': method({ target: str, volume: optStr }, async (p, bm) => ({
    target: p.target,
    backups: await bm.list({ target: p.target, ...(p.volume !== undefined ? { volume: p.volume } : {}) }),
  })),

  'backup.restore': method({ target: str, id: str, volume: str, wait: optBool, instant: optBool }, async (p, bm) => {
    const r = { target: p.target, id: p.id, volume: p.volume };
    return answer(bm, p.instant ? await bm.restoreInstant(r) : bm.restore(r), p.wait);
  }),

  'backup.verify': method({ target: str, id: optStr, samplePct: { type: 'integer', required: false, min: 1, max: 100 }, wait: optBool }, (p, bm) =>
    answer(bm, bm.verify({ target: p.target, ...(p.id !== undefined ? { id: p.id } : {}), samplePct: p.samplePct ?? 100 }), p.wait)),

  'backup.delete': method({ target: str, id: str }, (p, bm) => bm.delete({ target: p.target, id: p.id })),

  'backup.prune': method({
    target: str, volume: str, keepLast: keep, keepDaily: keep, keepWeekly: keep, keepMonthly: keep, dryRun: optBool,
    graceSeconds: { type: 'integer', required: false, min: 0, max: GRACE_MAX_S },
  }, (p, bm) => {
    const policy: RetentionPolicy = { keepLast: p.keepLast ?? 0, keepDaily: p.keepDaily ?? 0, keepWeekly: p.keepWeekly ?? 0, keepMonthly: p.keepMonthly ?? 0 };
    if (policy.keepLast + policy.keepDaily + policy.keepWeekly + policy.keepMonthly === 0) {
      throw invalidParams('backup.prune: give at least one of keepLast, keepDaily, keepWeekly, keepMonthly (a prune never deletes every backup)');
    }
    return bm.prune({ target: p.target, volume: p.volume, policy, dryRun: p.dryRun ?? false, ...(p.graceSeconds !== undefined ? { graceMs: p.graceSeconds * 1000 } : {}) });
  }),

  'backup.cancel': method({ job: str }, (p, bm) => bm.jobs.cancel(p.job)),

  'job.list': method({}, (_p, bm) => ({ jobs: bm.jobs.list() })),

  'job.info': method({ id: str }, (p, bm) => bm.jobs.get(p.id)),

  'job.cancel': method({ id: str }, (p, bm) => bm.jobs.cancel(p.id)),
} as const;
