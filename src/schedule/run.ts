// One run of a schedule: take the snapshot through the registry (so every busy rule holds),
// back it up through the backup manager when the schedule says so (waiting for the job), then
// apply retention (retention.ts) to that schedule's snapshots and backups. Never throws for what
// went wrong on the way: the result says it, and the scheduler logs and counts it.
import type { BackupManager } from '../backup/manager.ts';
import { StoreError, StoreErrorCode } from '../storage/types.ts';
import { log } from '../util/log.ts';
import type { VolumeRegistry } from '../volumes/registry.ts';
import { planBackupRetention, planSnapshotRetention, scheduledSnapshotName } from './retention.ts';
import type { RunResult, Schedule } from './schedule-file.ts';

/** "daily 02:00 Europe/Paris, keep 7" */
export function describeSchedule(s: Pick<Schedule, 'kind' | 'at' | 'every' | 'tz' | 'keep'>): string {
  return s.kind === 'every' ? `every ${s.every}, keep ${s.keep}` : `${s.kind} ${s.at} ${s.tz}, keep ${s.keep}`;
}

export async function runSchedule(s: Schedule, started: number, reg: VolumeRegistry, backups: BackupManager | undefined): Promise<RunResult> {
  const bm = (): BackupManager => {
    if (!backups) throw new Error('this server has no backup targets');
    return backups;
  };
  let snapshot: string;
  try {
    const taken = new Set((await reg.listSnapshots(s.volume)).map((x) => x.name));
    snapshot = scheduledSnapshotName(s.id, new Date(started), taken);
    await reg.createSnapshot(s.volume, snapshot, `taken by schedule ${s.id} (${describeSchedule(s)})`);
  } catch (e) {
    return { ok: false, error: `snapshot of ${s.volume}: ${(e as Error).message}` };
  }
  log.info(`schedule ${s.id}: took snapshot ${s.volume}@${snapshot}`);
  const result: RunResult = { ok: true, snapshot };
  const errors: string[] = [];
  if (s.backupTo !== undefined) {
    try {
      const job = bm().create({ target: s.backupTo, volume: s.volume, snapshot });
      const r = (await bm().jobs.result(job.id)) as { id: string };
      result.backup = r.id;
    } catch (e) {
      errors.push(`backup of ${s.volume}@${snapshot} to '${s.backupTo}': ${(e as Error).message}`);
    }
  }
  // Retention after the backup: the previous snapshot stays the incremental backup's base.
  const plan = planSnapshotRetention(s.id, s.keep, await reg.listSnapshots(s.volume));
  const deleted: string[] = [];
  const skipped = plan.skipped;
  for (const name of plan.delete) {
    try {
      await reg.deleteSnapshot(s.volume, name);
      deleted.push(name);
    } catch (e) {
      if (e instanceof StoreError && e.code === StoreErrorCode.SnapshotBusy) skipped.push({ name, reason: e.message });
      else if (!(e instanceof StoreError && e.code === StoreErrorCode.SnapshotNotFound)) errors.push(`delete ${s.volume}@${name}: ${(e as Error).message}`);
    }
  }
  if (deleted.length) result.deleted = deleted;
  if (skipped.length) {
    result.skipped = skipped;
    for (const k of skipped) log.warn(`schedule ${s.id}: retention kept ${s.volume}@${k.name}: ${k.reason}`);
  }
  if (s.backupTo !== undefined && s.keepBackups !== undefined) {
    const gone: string[] = [];
    try {
      const drop = planBackupRetention(s.id, s.keepBackups, bm().source, await bm().list({ target: s.backupTo, volume: s.volume }));
      for (const id of drop) {
        await bm().delete({ target: s.backupTo, id });
        gone.push(id);
      }
    } catch (e) {
      errors.push(`backup retention on '${s.backupTo}': ${(e as Error).message}`);
    }
    if (gone.length) result.backupsDeleted = gone;
  }
  if (errors.length) {
    result.ok = false;
    result.error = errors.join('; ');
  }
  return result;
}

