// Where the server's threads waited inside the kernel during a scenario (`--kernel-stacks DIR`):
// the samples bench/lib/kernel-stacks.mjs took of its threads in uninterruptible sleep, summed
// per place (the system call and the innermost frames of the stack) and per thread: the event
// loop's own thread (while it waits, no connection is served) apart from the others (libuv's pool:
// the reads, writes and fdatasyncs handed to it). A thread's *wait* is a run of consecutive
// samples that found it blocked at the same place; the longest ones are listed.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { median, round } from './stats.ts';

/** Innermost frames that name a place (with the system call). */
const PLACE_FRAMES = 3;
/** Places and waits listed. */
const LISTED = 8;

interface StacksFile { pid: number; sampleMs: number; rounds: [number, number][]; blocked: [number, number, number][]; stacks: string[] }

export interface KernelPlace { thread: 'loop' | 'pool'; where: string; ms: number }
export interface KernelStacksSummary {
  rounds: number;
  /** Median time between two samples (ms): each sample stands for that long. */
  medianGapMs: number;
  /** Whether the kernel stacks could be read (root); without, only the time blocked counts. */
  stacksRead: boolean;
  /** Time blocked in the kernel (ms), summed over threads: the event loop's and the others'. */
  loopBlockedMs: number;
  poolBlockedMs: number;
  /** Blocked time by place, the largest first. */
  places: KernelPlace[];
  /** The longest waits: one thread blocked at one place over consecutive samples. */
  longestWaits: (KernelPlace & { tid: number })[];
}

/** "pread64: folio_wait_bit_common < filemap_get_pages < filemap_read" from a stack, innermost first. */
export function placeOf(stack: string): string {
  if (stack === '') return 'unknown (stack not readable)';
  const frames = stack.split(' < ');
  const sys = frames.map((f) => /^(?:__x64_sys|__se_sys|__do_sys|__ia32_sys)_(\w+)$/.exec(f)?.[1]).find((s) => s !== undefined);
  return `${sys ?? 'kernel'}: ${frames.slice(0, PLACE_FRAMES).join(' < ')}`;
}

/** Reads the samples of server `pid` (null when there are none) and sums those within [fromUs, toUs]. */
export function kernelStacksSummary(dir: string, pid: number, fromUs: number, toUs: number): KernelStacksSummary | null {
  const file = join(dir, `kernel-stacks-${pid}.json`);
  if (!existsSync(file)) return null;
  const k = JSON.parse(readFileSync(file, 'utf8')) as StacksFile;
  const rounds = k.rounds.filter(([t]) => t >= fromUs && t <= toUs);
  // Each round's index and the time its samples stand for (a stalled sampler's gap counts little).
  const roundAt = new Map<number, { i: number; gap: number }>(rounds.map(([t, gap], i) => [t, { i, gap: Math.min(gap, 10 * k.sampleMs) }]));
  const gaps = rounds.map(([, g]) => g);
  const places = new Map<string, KernelPlace>();
  let loopBlockedMs = 0;
  let poolBlockedMs = 0;
  // Per thread: the wait in progress (its place, when it was last seen, how long so far).
  const open = new Map<number, { thread: KernelPlace['thread']; where: string; lastRound: number; ms: number }>();
  const waits: (KernelPlace & { tid: number })[] = [];
  const close = (tid: number): void => {
    const w = open.get(tid);
    if (!w) return;
    waits.push({ tid, thread: w.thread, where: w.where, ms: round(w.ms, 1) });
    open.delete(tid);
  };
  for (const [t, tid, id] of k.blocked) {
    const r = roundAt.get(t);
    if (r === undefined) continue;
    const { i, gap } = r;
    const thread: KernelPlace['thread'] = tid === k.pid ? 'loop' : 'pool';
    const where = placeOf(k.stacks[id] ?? '');
    if (thread === 'loop') loopBlockedMs += gap;
    else poolBlockedMs += gap;
    const key = `${thread} ${where}`;
    const p = places.get(key) ?? { thread, where, ms: 0 };
    p.ms += gap;
    places.set(key, p);
    const w = open.get(tid);
    if (w && w.where === where && w.lastRound === i - 1) {
      w.ms += gap;
      w.lastRound = i;
    } else {
      close(tid);
      open.set(tid, { thread, where, lastRound: i, ms: gap });
    }
  }
  for (const tid of [...open.keys()]) close(tid);
  return {
    rounds: rounds.length,
    medianGapMs: gaps.length ? round(median(gaps)) : 0,
    stacksRead: k.stacks.some((s) => s !== ''),
    loopBlockedMs: round(loopBlockedMs, 1),
    poolBlockedMs: round(poolBlockedMs, 1),
    places: [...places.values()].sort((a, b) => b.ms - a.ms).slice(0, LISTED).map((p) => ({ ...p, ms: round(p.ms, 1) })),
    longestWaits: waits.sort((a, b) => b.ms - a.ms).slice(0, LISTED),
  };
}
