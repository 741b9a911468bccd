// The schedules, durable: one small JSON file beside the store (DATA_DIR/schedules.json), replaced
// whole by write-temp, fsync, rename, fsync-the-directory, so a crash leaves the old file or the
// new one, never a torn one. A file beside the store rather than engine records: schedules are
// a few hundred bytes changed once a run, need no transaction with volume data, and the engine
// ignores files it does not own. A file that does not parse is reported and left as it is.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { replaceFile } from '../util/atomic-file.ts';
import { isScheduleKind, parseSpec, type ScheduleKind } from './calendar.ts';

export const SCHEDULE_FILE = 'schedules.json';
export const SCHEDULE_FILE_FORMAT = 1;
/** A schedules file larger than this is not ours (thousands of schedules fit in it). */
export const SCHEDULE_FILE_MAX_BYTES = 4 * 1024 * 1024;
/** Schedule ids: `s` and a number, never reused within a store. */
export const SCHEDULE_ID_PATTERN = /^s[1-9]\d{0,9}$/;

export interface RunResult {
  ok: boolean;
  snapshot?: string;
  error?: string;
  /** Snapshots retention deleted in this run. */
  deleted?: string[];
  /** Snapshots retention left although beyond `keep`, and why. */
  skipped?: { name: string; reason: string }[];
  /** The backup made of the new snapshot (with backupTo). */
  backup?: string;
  /** Backups deleted beyond keepBackups. */
  backupsDeleted?: string[];
}

/** A schedule as stored and as the control methods answer it. */
export interface Schedule {
  id: string;
  volume: string;
  kind: ScheduleKind;
  at?: string;
  every?: string;
  tz: string;
  keep: number;
  backupTo?: string;
  keepBackups?: number;
  created: string;
  nextRun: string;
  lastRun?: string;
  lastResult?: RunResult;
}

export interface ScheduleFileContent {
  nextId: number;
  schedules: Schedule[];
}

export class ScheduleFileError extends Error {
  override name = 'ScheduleFileError';
}

function check(cond: boolean, path: string, what: string): asserts cond {
  if (!cond) throw new ScheduleFileError(`${path}: ${what}; the file is left as it is (fix or remove it, then SIGHUP)`);
}

function isIso(s: unknown): s is string {
  return typeof s === 'string' && !Number.isNaN(Date.parse(s));
}

/** Checks one stored schedule; returns it typed. */
function readSchedule(raw: unknown, path: string, i: number): Schedule {
  const s = raw as Record<string, unknown>;
  const at = `schedule ${i}`;
  check(typeof s === 'object' && s !== null && !Array.isArray(s), path, `${at} is not an object`);
  check(typeof s.id === 'string' && SCHEDULE_ID_PATTERN.test(s.id), path, `${at} has no valid id`);
  check(typeof s.volume === 'string' && s.volume !== '', path, `${at} has no volume`);
  check(isScheduleKind(s.kind), path, `${at} has an unknown kind`);
  check(typeof s.tz === 'string', path, `${at} has no tz`);
  check(Number.isSafeInteger(s.keep) && (s.keep as number) >= 1, path, `${at} has no valid keep`);
  check(isIso(s.created) && isIso(s.nextRun), path, `${at} has no valid created/nextRun`);
  check(s.lastRun === undefined || isIso(s.lastRun), path, `${at} has an invalid lastRun`);
  check(s.backupTo === undefined || typeof s.backupTo === 'string', path, `${at} has an invalid backupTo`);
  check(s.keepBackups === undefined || Number.isSafeInteger(s.keepBackups), path, `${at} has an invalid keepBackups`);
  try {
    parseSpec(s.kind as string, s.at as string | undefined, s.every as string | undefined, s.tz as string);
  } catch (e) {
    check(false, path, `${at}: ${(e as Error).message}`);
  }
  return s as unknown as Schedule;
}

/** The stored schedules; none when the file does not exist. ScheduleFileError when it does not parse. */
export async function readScheduleFile(dataDir: string): Promise<ScheduleFileContent> {
  const path = join(dataDir, SCHEDULE_FILE);
  let text: string;
  try {
    const st = await fs.stat(path);
    check(st.size <= SCHEDULE_FILE_MAX_BYTES, path, `larger than ${SCHEDULE_FILE_MAX_BYTES} bytes`);
    text = await fs.readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { nextId: 1, schedules: [] };
    throw e;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ScheduleFileError(`${path}: not JSON (${(e as Error).message}); the file is left as it is (fix or remove it, then SIGHUP)`);
  }
  const d = doc as Record<string, unknown>;
  check(typeof d === 'object' && d !== null && !Array.isArray(d), path, 'not a JSON object');
  check(d.format === SCHEDULE_FILE_FORMAT, path, `format ${String(d.format)} is not ${SCHEDULE_FILE_FORMAT}`);
  check(Number.isSafeInteger(d.nextId) && (d.nextId as number) >= 1, path, 'nextId is not a positive whole number');
  check(Array.isArray(d.schedules), path, 'schedules is not an array');
  const schedules = (d.schedules as unknown[]).map((s, i) => readSchedule(s, path, i));
  const ids = new Set(schedules.map((s) => s.id));
  check(ids.size === schedules.length, path, 'two schedules share an id');
  return { nextId: d.nextId as number, schedules };
}

/** Replaces the file atomically and durably. */
export async function writeScheduleFile(dataDir: string, content: ScheduleFileContent): Promise<void> {
  const path = join(dataDir, SCHEDULE_FILE);
  const text = `${JSON.stringify({ format: SCHEDULE_FILE_FORMAT, nextId: content.nextId, schedules: content.schedules }, null, 1)}\n`;
  await replaceFile(path, text, 0o600);
}
