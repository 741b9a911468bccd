// The scheduler: owns the schedules (loaded from and saved to schedules.json), one timer for the
// earliest due run, which runs are in progress, and the counts metrics and health read. What a
// run does (snapshot, backup, retention) is run.ts.
// Rules (protocol/control.md, "Schedules"):
//   - the next run is computed before a run starts, so a failure waits for the next slot (never a
//     tight loop) and is retried then; a schedule never runs twice at once (slots that pass
//     during a run are taken once, when it ends);
//   - a run missed while the server was down (nextRun in the past at start) is taken once, at
//     start, and the next one is the next slot after that: no burst of catch-up snapshots;
//   - runs of different schedules may overlap; the registry serialises changes to one volume.
import type { BackupManager } from '../backup/manager.ts';
import { StoreError, StoreErrorCode } from '../storage/types.ts';
import { CodedError } from '../util/coded-error.ts';
import { log } from '../util/log.ts';
import type { VolumeRegistry } from '../volumes/registry.ts';
import { DEFAULT_TZ, nextRun, parseSpec, type ScheduleKind, type ScheduleSpec } from './calendar.ts';
import { runSchedule } from './run.ts';
import { readScheduleFile, writeScheduleFile, SCHEDULE_ID_PATTERN, type RunResult, type Schedule } from './schedule-file.ts';

/** The timer never sleeps longer than this, so a changed wall clock is noticed within it. */
export const TIMER_MAX_MS = 60_000;
/** The most snapshots/backups a schedule may keep (a typo like 1e9 is refused, not obeyed). */
export const SCHEDULE_KEEP_MAX = 10_000;
/** Schedules per server: each is one more timer check and file entry. */
export const SCHEDULES_MAX = 1000;

export const ScheduleErrorCode = {
  NotFound: 'SCHEDULE_NOT_FOUND',
  FileUnreadable: 'SCHEDULE_FILE_UNREADABLE',
  TooMany: 'TOO_MANY_SCHEDULES',
} as const;
export type ScheduleErrorCode = (typeof ScheduleErrorCode)[keyof typeof ScheduleErrorCode];

export class ScheduleError extends CodedError<ScheduleErrorCode> {
  override name = 'ScheduleError';
}

export interface ScheduleRequest {
  volume: string;
  kind: string;
  at?: string;
  every?: string;
  tz?: string;
  keep: number;
  backupTo?: string;
  keepBackups?: number;
}

export interface SchedulerStats {
  schedules: number;
  /** Schedules whose last run failed. */
  failing: number;
  runs: { ok: number; failed: number };
  snapshotsDeleted: number;
  retentionSkipped: number;
  backupsDeleted: number;
}

export interface SchedulerOptions {
  dataDir: string;
  registry: VolumeRegistry;
  backups?: BackupManager;
  /** Clock (tests pin it). */
  now?: () => number;
  /** No timer: runs happen only through runDue() (unit tests drive the clock). */
  manual?: boolean;
}

export class Scheduler {
  private readonly o: SchedulerOptions;
  private readonly schedules = new Map<string, { s: Schedule; spec: ScheduleSpec }>();
  private readonly running = new Map<string, Promise<void>>();
  private nextId = 1;
  private loadError: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private saving: Promise<void> = Promise.resolve();
  private readonly counts = { ok: 0, failed: 0, snapshotsDeleted: 0, retentionSkipped: 0, backupsDeleted: 0 };

  constructor(o: SchedulerOptions) {
    this.o = o;
  }

  private now(): number {
    return this.o.now ? this.o.now() : Date.now();
  }

  /** Loads the schedules and arms the timer; runs missed while stopped are due at once. */
  async start(): Promise<void> {
    await this.reload();
  }

  /** Re-reads schedules.json (SIGHUP); returns what changed. A bad file keeps the current set. */
  async reload(): Promise<string> {
    let content;
    try {
      content = await readScheduleFile(this.o.dataDir);
    } catch (e) {
      this.loadError = (e as Error).message;
      log.error('schedules: cannot read the schedules file; the schedules stay as they were (none at start) and are not saved until it is fixed', e);
      throw e;
    }
    this.loadError = null;
    const before = new Map(this.schedules);
    this.schedules.clear();
    let added = 0;
    let changed = 0;
    for (const s of content.schedules) {
      const old = before.get(s.id);
      // Unchanged: keep ours, whose nextRun/lastResult may be newer than the file's (a run saves at its end).
      if (old && definitionOf(old.s) === definitionOf(s)) this.schedules.set(s.id, old);
      else {
        this.schedules.set(s.id, { s, spec: specOf(s) });
        if (old) changed++;
        else added++;
      }
    }
    this.nextId = Math.max(content.nextId, this.nextId);
    const removed = [...before.keys()].filter((id) => !this.schedules.has(id)).length;
    this.arm();
    return `${this.schedules.size} schedule(s) (${added} added, ${changed} changed, ${removed} removed)`;
  }

  /** Adds a schedule and saves it before answering. */
  async add(r: ScheduleRequest): Promise<Schedule> {
    this.writable();
    if (this.schedules.size >= SCHEDULES_MAX) throw new ScheduleError(ScheduleErrorCode.TooMany, `this server has ${SCHEDULES_MAX} schedules, the most it keeps`);
    this.o.registry.volumeInfo(r.volume); // VOLUME_NOT_FOUND
    if (r.backupTo !== undefined) {
      const known = this.o.backups?.targets().map((t) => t.name) ?? [];
      if (!known.includes(r.backupTo)) {
        throw new StoreError(StoreErrorCode.InvalidArgument,
          `no backup target '${r.backupTo}' (${known.length ? `known: ${known.join(', ')}` : 'start serve with --backup-target NAME=URL'})`);
      }
    }
    const tz = r.tz ?? DEFAULT_TZ;
    const spec = parseSpec(r.kind, r.at, r.every, tz);
    const now = this.now();
    const s: Schedule = {
      id: `s${this.nextId}`, volume: r.volume, kind: r.kind as ScheduleKind,
      ...(r.at !== undefined ? { at: r.at } : {}),
      ...(r.every !== undefined ? { every: r.every } : {}),
      tz: spec.kind === 'every' ? tz : spec.tz,
      keep: r.keep,
      ...(r.backupTo !== undefined ? { backupTo: r.backupTo, keepBackups: r.keepBackups ?? r.keep } : {}),
      created: new Date(now).toISOString(),
      nextRun: new Date(nextRun(spec, now)).toISOString(),
    };
    this.nextId++;
    this.schedules.set(s.id, { s, spec });
    try {
      await this.save();
    } catch (e) {
      this.schedules.delete(s.id);
      throw e;
    }
    this.arm();
    return s;
  }

  list(volume?: string): Schedule[] {
    return [...this.schedules.values()].map((e) => e.s)
      .filter((s) => volume === undefined || s.volume === volume)
      .sort((a, b) => Number(a.id.slice(1)) - Number(b.id.slice(1)));
  }

  get(id: string): Schedule {
    const e = SCHEDULE_ID_PATTERN.test(id) ? this.schedules.get(id) : undefined;
    if (!e) throw new ScheduleError(ScheduleErrorCode.NotFound, `no schedule '${id}'`);
    return e.s;
  }

  async remove(id: string): Promise<void> {
    this.writable();
    const e = this.schedules.get(this.get(id).id)!;
    this.schedules.delete(id);
    try {
      await this.save();
    } catch (err) {
      this.schedules.set(id, e);
      throw err;
    }
    this.arm();
  }

  /** Forgets the schedules of a deleted volume and saves; never throws (the volume is gone either way). */
  async removeVolume(volume: string): Promise<string[]> {
    const ids = this.list(volume).map((s) => s.id);
    if (ids.length === 0 || this.loadError !== null) return [];
    for (const id of ids) this.schedules.delete(id);
    this.arm();
    log.info(`schedules: removed ${ids.join(', ')} with volume '${volume}'`);
    await this.save().catch((e: unknown) => log.error('schedules: cannot save the schedules file', e));
    return ids;
  }

  /** Saves the schedules as they are now (after add/remove, and after each run). */
  save(): Promise<void> {
    const content = { nextId: this.nextId, schedules: this.list() };
    const p = this.saving.then(() => writeScheduleFile(this.o.dataDir, content));
    this.saving = p.catch(() => undefined);
    return p;
  }

  /** Why `snapnbd health` is degraded because of schedules: one line each (none: healthy). */
  failures(): string[] {
    const out = this.loadError === null ? [] : [`schedules file: ${this.loadError}`];
    for (const s of this.list()) if (s.lastResult && !s.lastResult.ok) out.push(`schedule ${s.id} (${s.volume}): ${s.lastResult.error ?? 'failed'}`);
    return out;
  }

  stats(): SchedulerStats {
    const all = this.list();
    return {
      schedules: all.length, failing: all.filter((s) => s.lastResult?.ok === false).length,
      runs: { ok: this.counts.ok, failed: this.counts.failed },
      snapshotsDeleted: this.counts.snapshotsDeleted, retentionSkipped: this.counts.retentionSkipped, backupsDeleted: this.counts.backupsDeleted,
    };
  }

  /** Stops the timer; resolves when the runs in progress have ended (cancel backup jobs meanwhile). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await Promise.all(this.running.values());
    await this.saving;
  }

  private writable(): void {
    if (this.loadError !== null) throw new ScheduleError(ScheduleErrorCode.FileUnreadable, `${this.loadError}`);
  }

  private arm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped || this.o.manual) return;
    let first = Infinity;
    for (const { s } of this.schedules.values()) if (!this.running.has(s.id)) first = Math.min(first, Date.parse(s.nextRun));
    if (first === Infinity) return;
    const delay = Math.min(TIMER_MAX_MS, Math.max(0, first - this.now()));
    this.timer = setTimeout(() => this.tick(), delay);
    this.timer.unref();
  }

  private tick(): void {
    this.timer = null;
    void this.runDue();
  }

  /** Starts every due schedule that is not running; resolves when those runs have ended. */
  runDue(): Promise<void> {
    const now = this.now();
    const started: Promise<void>[] = [];
    for (const e of this.schedules.values()) {
      if (this.stopped || this.running.has(e.s.id) || Date.parse(e.s.nextRun) > now) continue;
      const id = e.s.id;
      const p = this.run(e.s, e.spec, now).finally(() => {
        this.running.delete(id);
        this.arm();
      });
      this.running.set(id, p);
      started.push(p);
    }
    this.arm();
    return Promise.all(started).then(() => undefined);
  }

  private async run(s: Schedule, spec: ScheduleSpec, started: number): Promise<void> {
    // First the next slot: whatever happens below, the schedule is not due again before it.
    s.nextRun = new Date(nextRun(spec, started)).toISOString();
    let result: RunResult;
    try {
      result = await runSchedule(s, started, this.o.registry, this.o.backups);
    } catch (e) {
      result = { ok: false, error: (e as Error).message };
    }
    this.counts.snapshotsDeleted += result.deleted?.length ?? 0;
    this.counts.retentionSkipped += result.skipped?.length ?? 0;
    this.counts.backupsDeleted += result.backupsDeleted?.length ?? 0;
    if (result.ok) this.counts.ok++;
    else {
      this.counts.failed++;
      log.error(`schedule ${s.id} (${s.volume}): run failed, retried at ${s.nextRun}: ${result.error ?? ''}`);
    }
    if (this.schedules.get(s.id)?.s !== s) return; // removed (or reloaded) meanwhile
    s.lastRun = new Date(started).toISOString();
    s.lastResult = result;
    if (this.loadError !== null) return; // never overwrite a file someone must fix
    await this.save().catch((e: unknown) => log.error(`schedule ${s.id}: cannot save the schedules file`, e));
  }

}

/** What a schedule is (not its run state), for comparing the file's copy with ours. */
function definitionOf(s: Schedule): string {
  return JSON.stringify([s.volume, s.kind, s.at, s.every, s.tz, s.keep, s.backupTo, s.keepBackups]);
}

function specOf(s: Schedule): ScheduleSpec {
  return parseSpec(s.kind, s.at, s.every, s.tz);
}

