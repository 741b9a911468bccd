// The backup manager's own small files, beside the store in DATA_DIR/backup-state/ (the engine
// ignores files it does not name): an instant restore's progress (restore-VOLUME.json, which
// blocks are filled) and the last results (results.json, README.md "State that survives a
// restart"). Each is replaced whole and crash-safe: written to a temporary file, synced,
// renamed over the old one, and the directory synced, so a crash leaves the old or the new.
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { replaceFile } from '../util/atomic-file.ts';

export const STATE_DIR = 'backup-state';
export const RESTORE_FORMAT = 1;
const RESTORE_FILE_RE = /^restore-(.+)\.json$/;
const PARTIAL_FILE_RE = /^partial-(.+)\.json$/;

export function stateDir(dataDir: string): string {
  return join(dataDir, STATE_DIR);
}

/** Replaces `path` with `data` atomically and durably (replaceFile), making the state dir first. */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf('/'));
  try {
    mkdirSync(dir); // the state dir only: the data dir itself must exist
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  await replaceFile(path, data);
}

/** An instant restore in progress: enough to resume it after a restart. */
export interface RestoreProgress {
  format: number;
  target: string;
  id: string;
  volume: string;
  /** The volume's creation time: a volume of the same name made later is not this restore's. */
  volumeCreated: string;
  blockSize: number;
  blocks: number;
  /** One bit per block, set when the block is filled and that is durable in the store. */
  done: Uint8Array;
}

export function restoreFile(dataDir: string, volume: string): string {
  return join(stateDir(dataDir), `restore-${volume}.json`);
}

export function encodeRestoreProgress(p: RestoreProgress): string {
  return JSON.stringify({ ...p, done: Buffer.from(p.done.buffer, p.done.byteOffset, p.done.byteLength).toString('base64') });
}

export function decodeRestoreProgress(text: string, what: string): RestoreProgress {
  const j = JSON.parse(text) as Record<string, unknown>;
  const str = (k: string): string => {
    if (typeof j[k] !== 'string') throw new Error(`${what}: field '${k}' is not a string`);
    return j[k] as string;
  };
  const int = (k: string): number => {
    if (!Number.isSafeInteger(j[k]) || (j[k] as number) <= 0) throw new Error(`${what}: field '${k}' is not a positive integer`);
    return j[k] as number;
  };
  if (j.format !== RESTORE_FORMAT) throw new Error(`${what}: format ${String(j.format)} is not ${RESTORE_FORMAT}`);
  const blocks = int('blocks');
  const done = new Uint8Array(Buffer.from(str('done'), 'base64'));
  if (done.length !== Math.ceil(blocks / 8)) throw new Error(`${what}: bitmap of ${done.length} bytes for ${blocks} blocks`);
  return { format: RESTORE_FORMAT, target: str('target'), id: str('id'), volume: str('volume'), volumeCreated: str('volumeCreated'), blockSize: int('blockSize'), blocks, done };
}

/** A (non-instant) restore under way: if the server dies, its half-made volume is removed at the next start. */
export interface PartialRestore {
  volume: string;
  volumeCreated: string;
  target: string;
  id: string;
}

export function partialFile(dataDir: string, volume: string): string {
  return join(stateDir(dataDir), `partial-${volume}.json`);
}

export function decodePartialRestore(text: string, what: string): PartialRestore {
  const j = JSON.parse(text) as Record<string, unknown>;
  for (const k of ['volume', 'volumeCreated', 'target', 'id']) if (typeof j[k] !== 'string') throw new Error(`${what}: field '${k}' is not a string`);
  return { volume: j.volume as string, volumeCreated: j.volumeCreated as string, target: j.target as string, id: j.id as string };
}

/** The progress files (or, `partial`, the markers of plain restores) present at startup, read synchronously. */
export function listRestoreFiles(dataDir: string, partial = false): string[] {
  const re = partial ? PARTIAL_FILE_RE : RESTORE_FILE_RE;
  try {
    return readdirSync(stateDir(dataDir)).filter((n) => re.test(n)).map((n) => join(stateDir(dataDir), n));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export function readStateFile(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

export async function removeStateFile(path: string): Promise<void> {
  await rm(path, { force: true });
}
