// Space used over time per volume, for the console's chart (control method volume.history): a
// bounded ring of samples per volume (used, referenced, written), taken every interval and kept
// in DATA_DIR/space-history.json so it survives restarts. Small on purpose: a day at the default
// interval per volume, for a bounded number of volumes, each sample four numbers in the file. A damaged file is set aside (logged) and the history starts again; the volumes
// themselves never depend on it.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { log } from '../util/log.ts';
import type { SpaceSample, VolumeHistory } from './view-types.d.ts';

export type { SpaceSample, VolumeHistory } from './view-types.d.ts';

export const HISTORY_FILE = 'space-history.json';
/** Samples kept per volume (a day at the default interval). */
export const HISTORY_SAMPLES_MAX = 288;
/** Default, smallest and largest sampling interval, seconds. */
export const HISTORY_INTERVAL_DEFAULT_S = 300;
export const HISTORY_INTERVAL_MIN_S = 1;
export const HISTORY_INTERVAL_MAX_S = 86_400;
/** Volumes with a history (the first by name): the file stays a few MiB at most. */
export const HISTORY_VOLUMES_MAX = 256;
const FILE_VERSION = 1;

export interface SpaceFigures {
  name: string;
  used: number;
  referenced: number;
  written: number;
}

export interface SpaceHistoryOptions {
  dataDir: string;
  intervalSeconds: number;
  /** The volumes' current figures. */
  figures(): SpaceFigures[];
  now?: () => Date;
}

export class SpaceHistory {
  private readonly o: SpaceHistoryOptions;
  private readonly path: string;
  private readonly rings = new Map<string, SpaceSample[]>();
  private timer: NodeJS.Timeout | null = null;

  constructor(o: SpaceHistoryOptions) {
    this.o = o;
    this.path = join(o.dataDir, HISTORY_FILE);
    this.load();
  }

  /** Takes a sample now and one every interval until stop(). */
  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.o.intervalSeconds * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** One sample of every volume; a volume gone since the last one is forgotten. Then saved. */
  sample(): void {
    let figures: SpaceFigures[];
    try {
      figures = this.o.figures();
    } catch (e) {
      log.warn('space history: cannot read the volumes', e);
      return;
    }
    // Whole seconds: what the file keeps.
    const at = new Date(Math.floor((this.o.now?.() ?? new Date()).getTime() / 1000) * 1000).toISOString();
    const live = new Set(figures.map((f) => f.name));
    for (const name of [...this.rings.keys()]) if (!live.has(name)) this.rings.delete(name);
    for (const f of [...figures].sort((a, b) => (a.name < b.name ? -1 : 1)).slice(0, HISTORY_VOLUMES_MAX)) {
      const ring = this.rings.get(f.name) ?? [];
      ring.push({ at, used: f.used, referenced: f.referenced, written: f.written });
      if (ring.length > HISTORY_SAMPLES_MAX) ring.splice(0, ring.length - HISTORY_SAMPLES_MAX);
      this.rings.set(f.name, ring);
    }
    this.save();
  }

  /** The samples of `volume`, oldest first (empty for a volume never sampled). */
  history(volume: string): VolumeHistory {
    return { volume, intervalSeconds: this.o.intervalSeconds, samples: [...(this.rings.get(volume) ?? [])] };
  }

  private save(): void {
    const tmp = `${this.path}.tmp`;
    try {
      writeFileSync(tmp, encodeHistoryFile(this.rings));
      renameSync(tmp, this.path);
    } catch (e) {
      log.warn(`space history: cannot write ${this.path}`, e);
    }
  }

  private load(): void {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn(`space history: cannot read ${this.path}`, e);
      return;
    }
    const volumes = parseHistoryFile(text);
    if (volumes === null) {
      const aside = `${this.path}.damaged`;
      log.warn(`space history: ${this.path} is not a history file; set aside as ${aside}, starting again`);
      try {
        renameSync(this.path, aside);
      } catch {
        // the next save replaces it anyway
      }
      return;
    }
    for (const [name, ring] of volumes) this.rings.set(name, ring.slice(-HISTORY_SAMPLES_MAX));
  }
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The file: `{version, volumes: {NAME: [[unixSeconds, used, referenced, written], ...]}}`. */
export function encodeHistoryFile(rings: ReadonlyMap<string, readonly SpaceSample[]>): string {
  const volumes: Record<string, number[][]> = {};
  for (const [name, ring] of rings) {
    volumes[name] = ring.map((s) => [Math.floor(Date.parse(s.at) / 1000), s.used, s.referenced, s.written]);
  }
  return JSON.stringify({ version: FILE_VERSION, volumes });
}

/** The file's rings, or null when it is not a history file (malformed samples are dropped). */
export function parseHistoryFile(text: string): Map<string, SpaceSample[]> | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof doc !== 'object' || doc === null) return null;
  const { version, volumes } = doc as { version?: unknown; volumes?: unknown };
  if (version !== FILE_VERSION || typeof volumes !== 'object' || volumes === null || Array.isArray(volumes)) return null;
  const out = new Map<string, SpaceSample[]>();
  for (const [name, ring] of Object.entries(volumes).slice(0, HISTORY_VOLUMES_MAX)) {
    if (!Array.isArray(ring)) return null;
    const samples: SpaceSample[] = [];
    for (const s of ring) {
      if (!Array.isArray(s) || s.length !== 4 || !s.every(isCount)) continue;
      const [t, used, referenced, written] = s as [number, number, number, number];
      samples.push({ at: new Date(t * 1000).toISOString(), used, referenced, written });
    }
    out.set(name, samples);
  }
  return out;
}
