// What held the server's event loop during a scenario (`--loop-watch DIR`): the late turns that
// bench/lib/loop-watch.mjs recorded inside the server, each laid beside what overlapped it: a GC
// pause, a slow synchronous fs call (both recorded in the server), a control call in flight
// (recorded by the harness on the same monotonic clock). A late turn with none of them is the
// data path's own work (NBD requests in one turn) or the machine taking the CPU away.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** Late turns at least this long are attributed (the target is 20 ms). */
export const LOOP_WATCH_ATTRIBUTE_MS = 10;
/** The longest late turns listed one by one. */
const LISTED = 10;

interface WatchFile { late: [number, number][]; gc: [number, number, number][]; sync: [number, number, string][] }

/** A control call the harness made: [startUs, endUs, method] on process.hrtime's clock. */
export type CallWindow = [number, number, string];

export const hrtimeUs = (): number => Number(process.hrtime.bigint() / 1000n);

export interface LoopWatchSummary {
  /** Late turns >= LOOP_WATCH_ATTRIBUTE_MS in the window. */
  lateTurns: number;
  longestMs: number;
  /** Late turns by what overlapped them (one turn may count under several). */
  overlapped: Record<string, number>;
  /** GC pauses in the window: count, sum and longest (ms). */
  gc: { count: number; sumMs: number; maxMs: number };
  /** Slow synchronous fs calls in the window by name: count and longest (ms). */
  syncFs: Record<string, { count: number; maxMs: number }>;
  longest: { ms: number; overlapped: string[] }[];
}

/** Reads the watch file of server `pid` (null when the server wrote none) and attributes its late turns within [fromUs, toUs]. */
export function loopWatchSummary(dir: string, pid: number, fromUs: number, toUs: number, calls: CallWindow[]): LoopWatchSummary | null {
  const file = join(dir, `loop-watch-${pid}.json`);
  if (!existsSync(file)) return null;
  const w = JSON.parse(readFileSync(file, 'utf8')) as WatchFile;
  const inWindow = (t: number): boolean => t >= fromUs && t <= toUs;
  const overlaps = (s: number, e: number, a: number, b: number): boolean => a < e && b > s;
  const turns = w.late.filter(([t, ms]) => inWindow(t) && ms >= LOOP_WATCH_ATTRIBUTE_MS)
    .map(([t, ms]) => {
      const s = t - ms * 1000;
      const what = new Set<string>();
      for (const [g, gms] of w.gc) if (overlaps(s, t, g, g + gms * 1000)) what.add('gc');
      for (const [f, fms, name] of w.sync) if (overlaps(s, t, f, f + fms * 1000)) what.add(`sync ${name}`);
      for (const [a, b, m] of calls) if (overlaps(s, t, a, b)) what.add(`call ${m}`);
      if (what.size === 0) what.add('none (NBD work, or the CPU taken away)');
      return { ms, overlapped: [...what] };
    });
  const overlapped: Record<string, number> = {};
  for (const t of turns) for (const k of t.overlapped) overlapped[k] = (overlapped[k] ?? 0) + 1;
  const gcs = w.gc.filter(([t]) => inWindow(t));
  const syncFs: Record<string, { count: number; maxMs: number }> = {};
  for (const [t, ms, name] of w.sync) {
    if (!inWindow(t)) continue;
    const e = syncFs[name] ?? (syncFs[name] = { count: 0, maxMs: 0 });
    e.count++;
    e.maxMs = Math.max(e.maxMs, ms);
  }
  return {
    lateTurns: turns.length,
    longestMs: turns.reduce((m, t) => Math.max(m, t.ms), 0),
    overlapped,
    gc: { count: gcs.length, sumMs: Math.round(gcs.reduce((a, g) => a + g[1], 0)), maxMs: gcs.reduce((m, g) => Math.max(m, g[1]), 0) },
    syncFs,
    longest: [...turns].sort((a, b) => b.ms - a.ms).slice(0, LISTED),
  };
}
