// Long-running backup work (create, restore, verify) as jobs: each has an id, progress, a
// result or an error, and can be cancelled. Finished jobs stay listed for a while, and across a
// restart: the manager saves the list when a job starts or ends (`onChange`) and gives it back
// with `adopt` (a job that was running then is shown failed: INTERRUPTED).
import { BackupError, BackupErrorCode } from './errors.ts';
import type { Progress } from './create.ts';

/** Finished jobs kept for job.list / job.info. */
export const FINISHED_JOBS_MAX = 100;

export const JobState = { Running: 'running', Done: 'done', Failed: 'failed', Cancelled: 'cancelled' } as const;
export type JobState = (typeof JobState)[keyof typeof JobState];

export interface JobView {
  id: string;
  kind: string;
  target: string;
  volume: string | null;
  snapshot: string | null;
  state: JobState;
  started: string;
  finished: string | null;
  bytesDone: number;
  bytesTotal: number;
  percent: number;
  bytesPerSecond: number;
  etaSeconds: number | null;
  result: unknown;
  error: { code: string; message: string } | null;
}

export interface JobContext {
  signal: AbortSignal;
  progress(p: Progress): void;
}

interface Job {
  view: JobView;
  /** The error itself, for callers that wait and rethrow it. */
  cause: unknown;
  controller: AbortController;
  done: Promise<void>;
}

/** The error of a job that was running when the server stopped. */
export const INTERRUPTED = 'INTERRUPTED';

export class JobTable {
  private readonly jobs = new Map<string, Job>();
  private next = 1;
  /** Told when a job starts or ends (the manager persists the list). */
  onChange: (() => void) | null = null;

  /** Lists jobs of an earlier run of the server (finished; a running one is shown interrupted). */
  adopt(views: JobView[], stoppedAt: string): void {
    for (const v of views) {
      const m = /^j(\d+)$/.exec(v.id);
      if (!m || this.jobs.has(v.id)) continue;
      const view: JobView = v.state === JobState.Running
        ? { ...v, state: JobState.Failed, finished: stoppedAt, etaSeconds: null, error: { code: INTERRUPTED, message: 'the server stopped while this job ran' } }
        : v;
      this.jobs.set(v.id, { view, cause: null, controller: new AbortController(), done: Promise.resolve() });
      this.next = Math.max(this.next, Number(m[1]) + 1);
    }
    this.trim();
  }

  start(meta: { kind: string; target: string; volume?: string; snapshot?: string }, run: (ctx: JobContext) => Promise<unknown>): JobView {
    const id = `j${this.next++}`;
    const started = Date.now();
    const view: JobView = {
      id, kind: meta.kind, target: meta.target, volume: meta.volume ?? null, snapshot: meta.snapshot ?? null,
      state: JobState.Running, started: new Date(started).toISOString(), finished: null,
      bytesDone: 0, bytesTotal: 0, percent: 0, bytesPerSecond: 0, etaSeconds: null, result: null, error: null,
    };
    const controller = new AbortController();
    const ctx: JobContext = {
      signal: controller.signal,
      progress: (p) => {
        view.bytesDone = p.bytesDone;
        view.bytesTotal = p.bytesTotal;
        view.percent = p.bytesTotal > 0 ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : 0;
        const secs = (Date.now() - started) / 1000;
        view.bytesPerSecond = secs > 0 ? Math.round(p.bytesDone / secs) : 0;
        view.etaSeconds = view.bytesPerSecond > 0 ? Math.ceil((p.bytesTotal - p.bytesDone) / view.bytesPerSecond) : null;
      },
    };
    const job: Job = { view, controller, done: Promise.resolve(), cause: null };
    job.done = (async () => {
      await Promise.resolve(); // the caller gets the job view before any of its work runs
      try {
        view.result = await run(ctx);
        view.state = JobState.Done;
        if (view.bytesTotal > 0) view.percent = 100;
        view.etaSeconds = 0;
      } catch (e) {
        job.cause = e;
        const cancelled = controller.signal.aborted;
        view.state = cancelled ? JobState.Cancelled : JobState.Failed;
        view.error = cancelled
          ? { code: BackupErrorCode.Cancelled, message: 'cancelled' }
          : { code: (e as { code?: string }).code ?? 'INTERNAL', message: (e as Error).message };
      } finally {
        view.finished = new Date().toISOString();
        this.trim();
        this.onChange?.();
      }
    })();
    this.jobs.set(id, job);
    this.onChange?.();
    return view;
  }

  get(id: string): JobView {
    return this.job(id).view;
  }

  list(): JobView[] {
    return [...this.jobs.values()].map((j) => j.view);
  }

  /** Resolves when the job has ended (whatever its outcome). */
  async wait(id: string): Promise<JobView> {
    const j = this.job(id);
    await j.done;
    return j.view;
  }

  /** The job's result once it is done; its own error if it failed or was cancelled. */
  async result(id: string): Promise<unknown> {
    const j = this.job(id);
    await j.done;
    if (j.view.state === JobState.Done) return j.view.result;
    if (j.view.state === JobState.Cancelled) throw new BackupError(BackupErrorCode.Cancelled, `job ${id} was cancelled`);
    throw j.cause ?? Object.assign(new Error(j.view.error?.message ?? 'failed'), { code: j.view.error?.code });
  }

  cancel(id: string): JobView {
    const j = this.job(id);
    if (j.view.state === JobState.Running) j.controller.abort();
    return j.view;
  }

  async cancelAll(): Promise<void> {
    for (const j of this.jobs.values()) if (j.view.state === JobState.Running) j.controller.abort();
    await Promise.all([...this.jobs.values()].map((j) => j.done));
  }

  private job(id: string): Job {
    const j = this.jobs.get(id);
    if (!j) throw new BackupError(BackupErrorCode.JobNotFound, `no job '${id}'`);
    return j;
  }

  private trim(): void {
    const finished = [...this.jobs.values()].filter((j) => j.view.state !== JobState.Running);
    for (const j of finished.slice(0, Math.max(0, finished.length - FINISHED_JOBS_MAX))) this.jobs.delete(j.view.id);
  }
}
