// What the console shows, gathered through the control methods themselves (callMethod, the
// dispatcher the socket uses) and pushed to every open event stream when it changes. One poller
// serves all streams and runs only while at least one is open; a console action pokes it so its
// effect shows at once. Methods that other parts of the server may add later (backups, jobs,
// schedules) are listed when the server has them: the console needs no change to show them.
import { callMethod, isMethodName, type ControlContext, type MethodName } from '../../control/methods.ts';
import { log } from '../../util/log.ts';

/** How often the state is gathered while a stream is open. */
export const WATCH_INTERVAL_MS = 1000;
/** Parameterless list methods shown when the server has them (their whole result is passed on). */
export const OPTIONAL_LISTS = ['job.list', 'backup.list', 'schedule.list'] as const;

export interface ConsoleState {
  at: string;
  volumes: unknown[];
  /** snapshot.list's `snapshots` per volume name. */
  snapshots: Record<string, unknown[]>;
  /** Results of the OPTIONAL_LISTS methods this server has, by method name. */
  lists: Record<string, unknown>;
}

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

  /** Gather now (after a change); a gather already running is followed by one more. */
  poke(): void {
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
        this.timer = setTimeout(() => this.poke(), this.intervalMs);
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

export async function gatherState(ctx: ControlContext): Promise<ConsoleState> {
  const { volumes } = (await callMethod('volume.list', {}, ctx)) as { volumes: { name: string }[] };
  const snapshots: Record<string, unknown[]> = {};
  for (const v of volumes) {
    try {
      snapshots[v.name] = ((await callMethod('snapshot.list', { volume: v.name }, ctx)) as { snapshots: unknown[] }).snapshots;
    } catch {
      // deleted between the two calls: the next gather drops it from `volumes` too
    }
  }
  const lists: Record<string, unknown> = {};
  for (const m of OPTIONAL_LISTS) {
    if (!isMethodName(m)) continue;
    try {
      lists[m] = await callMethod(m as MethodName, {}, ctx);
    } catch (e) {
      log.debug(`console: ${m}: ${(e as Error).message}`);
    }
  }
  return { at: new Date().toISOString(), volumes, snapshots, lists };
}
