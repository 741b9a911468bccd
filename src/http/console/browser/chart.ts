// Where the space history's points go: pure (no DOM), so node tests check it directly.
import type { SpaceSample } from './model.ts';

export const SERIES = ['used', 'referenced', 'written'] as const;
export type SeriesKey = (typeof SERIES)[number];

export interface ChartGeometry {
  /** The value at the top of the chart (the largest sample, rounded up to a round number). */
  top: number;
  /** Times of the first and last samples (ms since the epoch). */
  start: number;
  end: number;
  /** Per series, one [x, y] per sample, in the chart's coordinates (y grows downwards). */
  points: Record<SeriesKey, [number, number][]>;
}

/** A round size at least `v` bytes (1, 2 or 5 times a power of ten of its unit, B, KiB, MiB...), so the axis reads well. */
export function roundUpBytes(v: number): number {
  if (v <= 0) return 1;
  let unit = 1;
  while (v / unit >= 1024) unit *= 1024;
  const n = v / unit;
  const p = 10 ** Math.floor(Math.log10(n));
  const m = [1, 2, 5, 10].find((k) => k * p >= n) ?? 10;
  return m * p * unit;
}

export function chartGeometry(samples: readonly SpaceSample[], width: number, height: number): ChartGeometry {
  const times = samples.map((s) => Date.parse(s.at));
  const start = times[0] ?? 0;
  const end = times[times.length - 1] ?? 0;
  const top = roundUpBytes(Math.max(0, ...samples.flatMap((s) => SERIES.map((k) => s[k]))));
  const x = (t: number): number => (end > start ? ((t - start) / (end - start)) * width : width / 2);
  const y = (v: number): number => height - (v / top) * height;
  const points = Object.fromEntries(SERIES.map((k) => [k, samples.map((s, i) => [x(times[i]!), y(s[k])] as [number, number])])) as Record<SeriesKey, [number, number][]>;
  return { top, start, end, points };
}
