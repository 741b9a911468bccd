// What the console shows, gathered through the control methods themselves (callMethod, the
// dispatcher the socket uses) and pushed to every open event stream when it changes. One poller
// serves all streams and runs only while at least one is open; a console action pokes it so its
// effect shows at once, and while a job runs it looks more often so progress moves. Backup lists
// read the targets (object stores), so they are read again only after an action, when a job
// starts or ends, or every BACKUP_REFRESH_MS. Schedules show when the server has schedule.list.
import type { BackupView } from '../../backup/manager.ts';
import type { JobView } from '../../backup/jobs.ts';
import { callMethod, isMethodName, type ControlContext } from '../../control/methods.ts';
import { log } from '../../util/log.ts';
import type { Fits } from '../../volumes/views.ts';
import type { BackupRow, ClientView, ConsoleState, JobRow, ScheduleRow, SnapshotView, TargetView, VolumeView } from './wire.d.ts';

export type { ConsoleState } from './wire.d.ts';

/** How often the state is gathered while a stream is open, and while a job runs. */
export const WATCH_INTERVAL_MS = 1000;
export const WATCH_BUSY_INTERVAL_MS = 250;
/** Longest time a backup list is shown without being read again. */
export const BACKUP_REFRESH_MS = 30_000;

/** The server's own types fit the wire's rows (a compile error otherwise). */
export type WireChecks = [Fits<BackupView, BackupRow>, Fits<JobView, JobRow>];

type Listener = (json: string) => void;

export class ConsoleWatch {
  private readonly ctx: ControlContext;
  private readonly intervalMs: number;
  private readonly listeners = new Set<Listener>();
  private last: string | null = null;
  private lastKey: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private again = false;
  private closed = false;
  private busy = false;
  private backupsAt = 0;
  private backupsDue = true;
  private lastJobs = '';
  private backupCache: Pick<ConsoleState, 'targets' | 'backups' | 'backupErrors'> = { targets: [], backups: {}, backupErrors: {} };

  constructor(ctx: ControlContext, intervalMs = WATCH_INTERVAL_MS) {
    this.ctx = ctx;
    this.intervalMs = intervalMs;
  }

  /** Calls `fn` with the current state now and with every changed state after; returns unsubscribe. */
  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    if (this.last !== null) fn(this.last);
    this.poke();
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size === 0) this.stopTimer();
    };
  }

  get subscribers(): number {
    return this.listeners.size;
  }

  /** Gather now (after a change, `backups`: the backup lists too); a gather already running is followed by one more. */
  poke(backups = false): void {
    if (backups) this.backupsDue = true;
    if (this.closed || this.listeners.size === 0) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.stopTimer();
    this.running = true;
    void this.gatherAndSend().finally(() => {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.poke();
      } else if (!this.closed && this.listeners.size > 0) {
        this.timer = setTimeout(() => this.poke(), this.busy ? Math.min(this.intervalMs, WATCH_BUSY_INTERVAL_MS) : this.intervalMs);
      }
    });
  }

  close(): void {
    this.closed = true;
    this.stopTimer();
    this.listeners.clear();
  }

  private stopTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private async gatherAndSend(): Promise<void> {
    let state: ConsoleState;
    try {
      state = await gatherState(this.ctx);
      // A job that starts or ends changes the backup lists (and is why this looks faster).
      const jobs = JSON.stringify(state.jobs.map((j) => [j.id, j.state]));
      this.busy = state.jobs.some((j) => j.state === 'running');
      if (jobs !== this.lastJobs) this.backupsDue = true;
      this.lastJobs = jobs;
      if (this.backupsDue || Date.now() - this.backupsAt > BACKUP_REFRESH_MS) {
        this.backupsDue = false;
        this.backupsAt = Date.now();
        this.backupCache = await gatherBackups(this.ctx);
      }
      state = { ...state, ...this.backupCache };
    } catch (e) {
      log.warn(`console: cannot gather the volume list: ${(e as Error).message}`);
      return;
    }
    // `at` changes every time: compare without it.
    const key = JSON.stringify({ ...state, at: '' });
    if (key === this.lastKey) return;
    this.lastKey = key;
    this.last = JSON.stringify(state);
    for (const fn of [...this.listeners]) fn(this.last);
  }
}

/** Everything but the backup lists (gatherBackups), which the watch reads less often. */
export async function gatherState(ctx: ControlContext): Promise<ConsoleState> {
  const { volumes } = (await callMethod('volume.list', {}, ctx)) as { volumes: VolumeView[] };
  const snapshots: Record<string, SnapshotView[]> = {};
  for (const v of volumes) {
    try {
      snapshots[v.name] = ((await callMethod('snapshot.list', { volume: v.name }, ctx)) as { snapshots: SnapshotView[] }).snapshots;
    } catch {
      // deleted between the two calls: the next gather drops it from `volumes` too
    }
  }
  const stats = (await callMethod('server.stats', {}, ctx)) as { exports: { name: string; volume: string }[]; connections: ClientView[] };
  const volumeOf = new Map(stats.exports.map((e) => [e.name, e.volume]));
  const clients: Record<string, ClientView[]> = {};
  for (const c of stats.connections) {
    if (c.export === null) continue; // still negotiating
    const v = volumeOf.get(c.export) ?? c.export.split('@')[0]!;
    (clients[v] ??= []).push({ peer: c.peer, identity: c.identity, tls: c.tls, export: c.export });
  }
  const jobs = await optional<{ jobs: JobRow[] }>(ctx, 'job.list', {});
  const schedules = await optional<{ schedules: ScheduleRow[] }>(ctx, 'schedule.list', {});
  return {
    at: new Date().toISOString(), volumes, snapshots, clients, jobs: jobs?.jobs ?? [], schedules: schedules?.schedules ?? null,
    targets: [], backups: {}, backupErrors: {},
  };
}

/** The backup targets and each one's backups (a target that cannot be read says why). */
export async function gatherBackups(ctx: ControlContext): Promise<Pick<ConsoleState, 'targets' | 'backups' | 'backupErrors'>> {
  const targets = (await optional<{ targets: TargetView[] }>(ctx, 'backup.targets', {}))?.targets ?? [];
  const backups: Record<string, BackupRow[]> = {};
  const backupErrors: Record<string, string> = {};
  for (const t of targets) {
    try {
      backups[t.name] = ((await callMethod('backup.list', { target: t.name }, ctx)) as { backups: BackupRow[] }).backups;
    } catch (e) {
      backupErrors[t.name] = (e as Error).message;
    }
  }
  return { targets, backups, backupErrors };
}

/** A method this server may not have (or that refuses here): its result, or null. */
async function optional<T>(ctx: ControlContext, method: string, params: Record<string, unknown>): Promise<T | null> {
  if (!isMethodName(method)) return null;
  try {
    return (await callMethod(method, params, ctx)) as T;
  } catch (e) {
    log.debug(`console: ${method}: ${(e as Error).message}`);
    return null;
  }
}
