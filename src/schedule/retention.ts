// Which snapshots and backups a schedule's retention removes, on plain data: pure. A schedule
// owns only the snapshots whose names it generated (`auto-ID-YYYYMMDDTHHMMSSZ`, maybe `-N`), so a
// manual snapshot is never a candidate. Beyond the newest `keep`, the oldest go first; one that
// is the origin of a clone or exported to NBD clients is skipped with the reason (it stays until a
// later run finds it free). A snapshot held by a backup is found busy only when deleting it
// (SNAPSHOT_BUSY), and the caller reports it the same way.
import { generatedSnapshotBase, uniqueName } from '../volumes/export-name.ts';

/** Prefix of every snapshot a schedule takes: `auto-ID-`. */
export const AUTO_PREFIX = 'auto';

export interface SnapshotFacts {
  name: string;
  created: string;
  clones: string[];
  connections: number;
}

export interface Skipped {
  name: string;
  reason: string;
}

export interface RetentionPlan {
  delete: string[];
  skipped: Skipped[];
}

/** The name a schedule gives the snapshot it takes at `at`, unique among `taken`. */
export function scheduledSnapshotName(id: string, at: Date, taken: ReadonlySet<string>): string {
  return uniqueName(generatedSnapshotBase(`${AUTO_PREFIX}-${id}`, at), taken);
}

/** Whether schedule `id` generated the snapshot name (ids never contain '-', so s1 and s12 differ). */
export function isScheduledBy(id: string, name: string): boolean {
  return new RegExp(`^${AUTO_PREFIX}-${id}-\\d{8}T\\d{6}Z(-\\d+)?$`).test(name);
}

function byAge<T extends { created: string; name: string }>(a: T, b: T): number {
  return a.created < b.created ? -1 : a.created > b.created ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** The snapshots of schedule `id` beyond the newest `keep`, oldest first, minus the busy ones. */
export function planSnapshotRetention(id: string, keep: number, snapshots: readonly SnapshotFacts[]): RetentionPlan {
  const mine = snapshots.filter((s) => isScheduledBy(id, s.name)).sort(byAge);
  const excess = mine.slice(0, Math.max(0, mine.length - keep));
  const plan: RetentionPlan = { delete: [], skipped: [] };
  for (const s of excess) {
    if (s.clones.length > 0) plan.skipped.push({ name: s.name, reason: `origin of clone(s) ${s.clones.join(', ')}` });
    else if (s.connections > 0) plan.skipped.push({ name: s.name, reason: `exported to ${s.connections} NBD connection(s)` });
    else plan.delete.push(s.name);
  }
  return plan;
}

export interface BackupFacts {
  id: string;
  snapshot: string;
  created: string;
  source: string;
  state: string;
}

/** This server's finished backups of schedule `id`'s snapshots beyond the newest `keep`, oldest first. */
export function planBackupRetention(id: string, keep: number, source: string, backups: readonly BackupFacts[]): string[] {
  const mine = backups
    .filter((b) => b.state === 'backed-up' && b.source === source && isScheduledBy(id, b.snapshot))
    .map((b) => ({ ...b, name: b.id }))
    .sort(byAge);
  return mine.slice(0, Math.max(0, mine.length - keep)).map((b) => b.id);
}
