// `server.health` (and `snapnbd health`): is this server fit to keep serving? Three checks, each
// with a human detail: the data dir takes a durable write (a probe file written, synced and
// removed: a read-only remount or a failing disk shows here before a client's write does), its
// file system has more than a share of free space, and the last run of every schedule and backup
// operation succeeded.
import { open, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { formatSize } from '../util/size.ts';
import type { OperationMetrics } from '../util/operation-metrics.ts';

/** Free space below this share of the file system is degraded unless the caller says otherwise. */
export const HEALTH_MIN_FREE_PERCENT_DEFAULT = 5;
/** Written and removed by the writability check; the store ignores files it does not own. */
export const HEALTH_PROBE_FILE = '.health-probe';
/** Operations whose last run counts: scheduled snapshots and backups (names start with these). */
const RUN_OPERATION_PREFIXES = ['schedule', 'backup'];

export interface HealthSources {
  dataDir: string;
  operations: OperationMetrics;
  /** Schedules whose last run failed, one line each (src/schedule/scheduler.ts). */
  schedules?: { failures(): string[]; stats(): { schedules: number } };
}

export interface HealthCheck {
  name: 'store_writable' | 'free_space' | 'last_runs';
  ok: boolean;
  detail: string;
}

export interface HealthReport {
  status: 'ok' | 'degraded';
  checks: HealthCheck[];
}

export async function checkHealth(src: HealthSources, minFreePercent = HEALTH_MIN_FREE_PERCENT_DEFAULT): Promise<HealthReport> {
  const checks = [await storeWritable(src.dataDir), await freeSpace(src.dataDir, minFreePercent), lastRuns(src.operations, src.schedules?.failures() ?? [], src.schedules?.stats().schedules ?? 0)];
  return { status: checks.every((c) => c.ok) ? 'ok' : 'degraded', checks };
}

async function storeWritable(dir: string): Promise<HealthCheck> {
  const path = join(dir, HEALTH_PROBE_FILE);
  try {
    const f = await open(path, 'w');
    try {
      await f.write(`${process.pid} ${new Date().toISOString()}\n`);
      await f.datasync();
    } finally {
      await f.close();
    }
    await unlink(path);
    return { name: 'store_writable', ok: true, detail: `${dir} takes a synced write` };
  } catch (e) {
    return { name: 'store_writable', ok: false, detail: `${dir} does not take a write: ${(e as Error).message}` };
  }
}

async function freeSpace(dir: string, minPercent: number): Promise<HealthCheck> {
  try {
    const s = await statfs(dir);
    const free = s.bavail * s.bsize;
    const total = s.blocks * s.bsize;
    const pct = total > 0 ? (100 * free) / total : 0;
    const detail = `${formatSize(free)} free of ${formatSize(total)} (${pct.toFixed(1)}%, minimum ${minPercent}%)`;
    return { name: 'free_space', ok: pct >= minPercent, detail };
  } catch (e) {
    return { name: 'free_space', ok: false, detail: `cannot read the free space of ${dir}: ${(e as Error).message}` };
  }
}

function lastRuns(ops: OperationMetrics, scheduleFailures: string[], schedules: number): HealthCheck {
  const failed: string[] = [...scheduleFailures];
  let runs = schedules;
  for (const [op, f] of ops.all()) {
    if (!RUN_OPERATION_PREFIXES.some((p) => op.startsWith(p))) continue;
    runs++;
    if (f.lastError !== null) failed.push(`${op}: ${f.lastError}`);
  }
  if (failed.length > 0) return { name: 'last_runs', ok: false, detail: `last run failed: ${failed.join('; ')}` };
  return { name: 'last_runs', ok: true, detail: runs === 0 ? 'no scheduled snapshot or backup has run yet' : `the last run of ${runs} operation(s) succeeded` };
}
