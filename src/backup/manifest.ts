// The manifest: one per backup, the whole description of it (every block of the volume, by name
// or as zero), so each backup restores on its own. Encoded as gzipped JSON; zero runs are counts,
// so a sparse volume's manifest stays small. Pure: encode and its mirror decode.
import { gunzipSync, gzipSync } from 'node:zlib';
import { BackupError, BackupErrorCode } from './errors.ts';

export const MANIFEST_FORMAT = 1;
/** Bytes per backup block (see README: 1 MiB keeps a 1 MiB change under 2 MiB uploaded and requests large). */
export const BACKUP_BLOCK_SIZE = 1024 * 1024;
const NAME_RE = /^[0-9a-f]{64}$/;
/** Largest decoded manifest we accept (a 64 TiB volume, every block distinct). */
const MANIFEST_JSON_MAX = 1024 ** 3;

export interface Manifest {
  format: number;
  id: string;
  volume: string;
  snapshot: string;
  /** The snapshot's creation time on its server: with `source`, its identity. */
  snapshotCreated: string;
  size: number;
  chunkSize: number;
  blockSize: number;
  created: string;
  /** host:dataDir of the server that made it. */
  source: string;
  /** The backup it was made incrementally against, if any (informative: restore never needs it). */
  base: string | null;
  /** One entry per block: a name, or null for a zero block. */
  blocks: (string | null)[];
  bytesUploaded: number;
  blocksReused: number;
}

type Encoded = Omit<Manifest, 'blocks'> & { blocks: (string | number)[] };

export function encodeManifest(m: Manifest): Buffer {
  const runs: (string | number)[] = [];
  for (const b of m.blocks) {
    if (b === null) {
      const last = runs[runs.length - 1];
      if (typeof last === 'number') runs[runs.length - 1] = last + 1;
      else runs.push(1);
    } else runs.push(b);
  }
  const e: Encoded = { ...m, blocks: runs };
  return gzipSync(Buffer.from(JSON.stringify(e)));
}

export function decodeManifest(data: Buffer, what: string): Manifest {
  let e: Encoded;
  try {
    const json = gunzipSync(data, { maxOutputLength: MANIFEST_JSON_MAX });
    e = JSON.parse(json.toString('utf8')) as Encoded;
  } catch (err) {
    throw new BackupError(BackupErrorCode.BackupCorrupt, `manifest ${what} is unreadable: ${(err as Error).message}`);
  }
  const bad = (why: string): never => { throw new BackupError(BackupErrorCode.BackupCorrupt, `manifest ${what}: ${why}`); };
  if (e === null || typeof e !== 'object' || !Array.isArray(e.blocks)) bad('not a manifest');
  if (e.format !== MANIFEST_FORMAT) bad(`format ${String(e.format)} (this server reads ${MANIFEST_FORMAT})`);
  for (const k of ['id', 'volume', 'snapshot', 'snapshotCreated', 'created', 'source'] as const) if (typeof e[k] !== 'string') bad(`field ${k}`);
  for (const k of ['size', 'chunkSize', 'blockSize', 'bytesUploaded', 'blocksReused'] as const) {
    if (!Number.isSafeInteger(e[k]) || e[k] < 0) bad(`field ${k}`);
  }
  if (e.blockSize <= 0) bad('block size');
  const blocks: (string | null)[] = [];
  const want = Math.ceil(e.size / e.blockSize);
  for (const r of e.blocks) {
    if (typeof r === 'number') {
      if (!Number.isSafeInteger(r) || r <= 0 || blocks.length + r > want) bad('zero run');
      for (let i = 0; i < r; i++) blocks.push(null);
    } else if (typeof r === 'string' && NAME_RE.test(r)) blocks.push(r);
    else bad('block entry');
  }
  if (blocks.length !== want) bad(`${blocks.length} blocks for size ${e.size}`);
  return { ...e, base: typeof e.base === 'string' ? e.base : null, blocks };
}

/** Sortable, unique backup ids: creation time then random. */
export function newBackupId(now: Date, random: string): string {
  return `${now.toISOString().replace(/[-:]/g, '').replace(/\.(\d{3})Z$/, '$1Z')}-${random}`;
}
export const BACKUP_ID_PATTERN = /^\d{8}T\d{9}Z-[0-9a-f]{8}$/;
