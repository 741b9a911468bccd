// Backing files: the fingerprint taken when a volume is created (size, mtime, a crc32 over
// evenly spread samples) and the check at open that the file is still the same. A changed or
// missing file makes its volumes (and their clones) refuse I/O with BACKING_CHANGED; the other
// volumes open normally. Backing files are opened read-only and never written.
import { crc32 } from 'node:zlib';
import type { Volume } from './catalog.ts';
import type { FileIo, IoFile } from './file-io.ts';
import type { BackingRecord } from './records.ts';
import { SECTOR, StoreError, StoreErrorCode } from './types.ts';
import { isoTime } from './accounting.ts';

/** Samples (of BACKING_SAMPLE_LEN bytes) checksummed to notice a changed backing file. */
export const BACKING_SAMPLES = 16;
export const BACKING_SAMPLE_LEN = 4096;

/** A cheap fingerprint of a backing file: crc32 over evenly spread samples (and its size). */
export async function sampleChecksum(f: IoFile, size: number): Promise<number> {
  const buf = Buffer.alloc(BACKING_SAMPLE_LEN);
  let crc = crc32(String(size));
  for (let i = 0; i < BACKING_SAMPLES; i++) {
    const pos = size <= BACKING_SAMPLE_LEN ? 0 : Math.floor(((size - BACKING_SAMPLE_LEN) * i) / (BACKING_SAMPLES - 1) / SECTOR) * SECTOR;
    const n = await f.read(buf, 0, BACKING_SAMPLE_LEN, pos);
    crc = crc32(buf.subarray(0, n), crc);
    if (size <= BACKING_SAMPLE_LEN) break;
  }
  return crc;
}

/** Opens a new volume's backing file and takes its fingerprint (the caller closes `file` on error). */
export async function fingerprintBacking(io: FileIo, path: string): Promise<{ record: BackingRecord; file: IoFile }> {
  const st = await io.stat(path);
  if (!st) throw new StoreError(StoreErrorCode.InvalidArgument, `backing file ${path} not found`);
  const file = await io.open(path, 'r');
  return { record: { path, size: st.size, mtimeMs: st.mtimeMs, sample: await sampleChecksum(file, st.size) }, file };
}

/** At open: gives every volume with a backing file its handle, or the reason it cannot be used. */
export async function openBackings(io: FileIo, volumes: Iterable<Volume>, log: (msg: string) => void): Promise<void> {
  const checked = new Map<string, { f: IoFile | null; err: StoreError | null }>();
  for (const v of volumes) {
    if (!v.backing) continue;
    const key = `${v.backing.path}\0${v.backing.size}\0${v.backing.mtimeMs}\0${v.backing.sample}`;
    let r = checked.get(key);
    if (!r) {
      r = await checkBacking(io, v.backing);
      checked.set(key, r);
    }
    v.backingFile = r.f;
    v.backingError = r.err;
    if (r.err) log(r.err.message);
  }
}

/** Opens a recorded backing file if it is still the same; else the reason it is not. */
export async function checkBacking(io: FileIo, b: BackingRecord): Promise<{ f: IoFile | null; err: StoreError | null }> {
  const st = await io.stat(b.path);
  if (!st) return { f: null, err: new StoreError(StoreErrorCode.BackingChanged, `backing file ${b.path} is missing`) };
  const f = await io.open(b.path, 'r');
  const why: string[] = [];
  if (st.size !== b.size) why.push(`size ${st.size} != ${b.size}`);
  if (st.mtimeMs !== b.mtimeMs) why.push(`mtime ${isoTime(st.mtimeMs)} != ${isoTime(b.mtimeMs)}`);
  if (why.length === 0 && (await sampleChecksum(f, st.size)) !== b.sample) why.push('sampled checksum differs');
  if (why.length === 0) return { f, err: null };
  await f.close();
  return { f: null, err: new StoreError(StoreErrorCode.BackingChanged, `backing file ${b.path} changed since its volume was created (${why.join(', ')})`) };
}

/** Reads [pos, pos+len) of a volume's backing file into into[off..]; zeros past its end. */
export async function readBacking(vol: Volume, pos: number, len: number, into: Buffer, off: number, background = false): Promise<void> {
  const bsize = vol.backing ? vol.backing.size : 0;
  const n = Math.max(0, Math.min(len, bsize - pos));
  if (n > 0) {
    const got = await vol.backingFile!.read(into, off, n, pos, background);
    if (got < n) into.fill(0, off + got, off + n);
  }
  if (n < len) into.fill(0, off + n, off + len);
}

/** Closes each distinct backing file once (several volumes may share one handle). */
export async function closeBackings(volumes: Iterable<Volume>): Promise<void> {
  const files = new Set<IoFile>();
  for (const v of volumes) if (v.backingFile) files.add(v.backingFile);
  for (const f of files) await f.close().catch(() => undefined);
}
