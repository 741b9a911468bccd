// Opening a data dir: create a new store, or choose the newest valid superblock, replay its
// journal (the checkpoint, then every intact in-sequence transaction), cut the torn tail, derive
// the slot state from the reference counts, and delete what no committed state references
// (stale journals, empty segment files, segment tails). Recovery writes nothing that changes the
// committed state, so it is deterministic and idempotent (README.md "Recovery"). The result is
// the catalog, the chunk store and the transaction manager (journal.ts), ready to use.
import { ENTRIES_PER_PAGE, patchSimilarPages, type NodeMap } from './block-map.ts';
import { Catalog } from './catalog.ts';
import { applyRecord, type CheckpointTables } from './catalog-records.ts';
import { CheckpointPlan, PAGE_RECORD_BYTES } from './checkpoint.ts';
import { DataStore, SEGMENT_FILE_RE } from './chunk-store.ts';
import type { FileIo, IoFile } from './file-io.ts';
import {
  CREATING_FILE, decodeJournalHeader, decodeSuperblock, FORMAT_VERSION, JOURNAL_FILE_RE, JOURNAL_HEADER_LEN, journalFile, Rec,
  SUPERBLOCK_FILE, SUPERBLOCK_SLOT, type RecordReader, type Superblock,
} from './format.ts';
import { Journal, type JournalState } from './journal.ts';
import { CHAIN_DEPTH_MAX } from './partial-slots.ts';
import { RECORD_PIECE_BYTES, scanFileRecords } from './record-pieces.ts';
import { StoreError, StoreErrorCode } from './types.ts';

/** Slot tables sized at open for this many times the chunks the checkpoint's pages can map. */
const RESERVE_HEADROOM = 1.125;

export type LogFn = (level: 'error' | 'warn' | 'info' | 'debug', msg: string) => void;

export interface OpenOptions {
  fileIo: FileIo;
  log: LogFn;
  /** Segment file size for a new store (existing stores keep theirs). */
  segmentBytes: number;
  journalCompactBytes: number;
  /** Open for offline checking: no writes at all (no tail truncation, no reclaim). */
  inspectOnly: boolean;
  /** Bytes per piece the journal is read and a checkpoint written in (default RECORD_PIECE_BYTES; tests use tiny ones). */
  pieceBytes?: number;
}

export interface OpenedStore {
  catalog: Catalog;
  chunks: DataStore;
  journal: Journal;
  /** True when the data dir held no store and one was created. */
  created: boolean;
  /** Bytes of uncommitted journal tail found at open (check reports them). */
  tornTail: number;
}

export function corrupt(file: string, why: string, cause?: unknown): StoreError {
  return new StoreError(StoreErrorCode.StoreCorrupt, `${file}: ${why}`, cause === undefined ? undefined : { cause });
}

/** Opens (or creates) the store in `dataDir`; a corrupt, foreign or newer store is refused with STORE_CORRUPT. */
export async function openStoreFiles(dataDir: string, opts: OpenOptions): Promise<OpenedStore> {
  const io = opts.fileIo;
  const sbPath = `${dataDir}/${SUPERBLOCK_FILE}`;
  if (!opts.inspectOnly) await io.mkdirp(dataDir);
  if (await io.stat(`${dataDir}/${CREATING_FILE}`)) {
    if (opts.inspectOnly) throw corrupt(sbPath, 'the store was never completely created (the next serve creates it anew)');
    await removeUnfinishedStore(dataDir, opts);
    return createStore(dataDir, opts);
  }
  const st = await io.stat(sbPath);
  if (!st) return createStore(dataDir, opts);
  const sbFile = await io.open(sbPath, opts.inspectOnly ? 'r' : 'rw');
  const sb = await chooseSuperblock(sbFile, sbPath);
  const chunks = new DataStore(io, dataDir, sb.segmentBytes);
  const catalog = new Catalog(chunks);
  const replayed = await replayJournal(dataDir, sb, catalog, chunks, opts);
  const journal = new Journal(journalOptions(dataDir, opts, chunks, catalog), {
    sbFile, journal: replayed.file, sbSeq: sb.seq, journalGen: sb.journalGen, journalEnd: replayed.end,
    checkpointLen: sb.checkpointLen, commitSeq: replayed.commitSeq,
  });
  if (!opts.inspectOnly) await reclaimFiles(io, dataDir, sb.journalGen, chunks, opts.log);
  return { catalog, chunks, journal, created: false, tornTail: replayed.tornTail };
}

function journalOptions(dataDir: string, opts: OpenOptions, chunks: DataStore, catalog: Catalog) {
  return {
    io: opts.fileIo, dataDir, chunks, planCheckpoint: () => new CheckpointPlan(catalog, chunks), journalCompactBytes: opts.journalCompactBytes,
    pieceBytes: opts.pieceBytes ?? RECORD_PIECE_BYTES, releasesPending: () => catalog.releasesPending,
  };
}

async function createStore(dataDir: string, opts: OpenOptions): Promise<OpenedStore> {
  const io = opts.fileIo;
  const sbPath = `${dataDir}/${SUPERBLOCK_FILE}`;
  const names = await io.readdir(dataDir);
  const ours = names.filter((n) => JOURNAL_FILE_RE.test(n) || SEGMENT_FILE_RE.test(n));
  if (ours.length > 0) throw corrupt(sbPath, `superblock file missing but store files exist (${ours.slice(0, 3).join(', ')})`);
  if (opts.inspectOnly) throw corrupt(sbPath, 'no store here (superblock file missing)');
  // The marker is durable before any store file exists and goes only once all of them are: a
  // power cut in between leaves it, and the next open starts the creation over (openStoreFiles).
  const creating = `${dataDir}/${CREATING_FILE}`;
  await (await io.open(creating, 'create')).close();
  await io.syncDir(dataDir);
  const chunks = new DataStore(io, dataDir, opts.segmentBytes);
  const catalog = new Catalog(chunks);
  const state: JournalState = { sbFile: await io.open(sbPath, 'create'), journal: null, sbSeq: 0, journalGen: 0, journalEnd: 0, checkpointLen: 0, commitSeq: 0 };
  const journal = new Journal(journalOptions(dataDir, opts, chunks, catalog), state);
  await journal.create();
  await io.syncDir(dataDir);
  await io.unlink(creating);
  await io.syncDir(dataDir);
  return { catalog, chunks, journal, created: true, tornTail: 0 };
}

/** A creation cut short: its files were never handed to anyone, so they go (createStore reuses the marker). */
async function removeUnfinishedStore(dataDir: string, opts: OpenOptions): Promise<void> {
  const io = opts.fileIo;
  opts.log('warn', `${dataDir}: the store's creation was cut short; creating it anew`);
  for (const name of await io.readdir(dataDir)) {
    if (name === SUPERBLOCK_FILE || JOURNAL_FILE_RE.test(name) || SEGMENT_FILE_RE.test(name)) await io.unlink(`${dataDir}/${name}`);
  }
  await io.syncDir(dataDir);
}

/** The valid copy with the highest sequence; one good copy is enough (the other may be torn). */
async function chooseSuperblock(sbf: IoFile, sbPath: string): Promise<Superblock> {
  const sbBuf = Buffer.alloc(SUPERBLOCK_SLOT * 2);
  const n = await sbf.read(sbBuf, 0, sbBuf.length, 0);
  let best: Superblock | null = null;
  const whys: string[] = [];
  for (let i = 0; i < 2; i++) {
    const r = decodeSuperblock(sbBuf.subarray(i * SUPERBLOCK_SLOT, Math.min(n, (i + 1) * SUPERBLOCK_SLOT)));
    if (r.ok) {
      if (!best || r.sb.seq > best.seq) best = r.sb;
    } else {
      if (r.why === 'newer') throw corrupt(sbPath, `format version ${r.version} is newer than this snapnbd supports (${FORMAT_VERSION})`);
      whys.push(r.why);
    }
  }
  // None good: say why.
  if (!best && whys.every((w) => w === 'foreign' || w === 'empty') && whys.includes('foreign')) throw corrupt(sbPath, 'not a snapnbd store (bad magic)');
  if (!best) throw corrupt(sbPath, `no valid superblock (${whys.map((w, i) => `copy ${i}: ${w}`).join('; ')})`);
  return best;
}

/** Applies the checkpoint and every intact, in-sequence transaction after it; cuts the torn tail. */
async function replayJournal(dataDir: string, sb: Superblock, catalog: Catalog, chunks: DataStore, opts: OpenOptions):
  Promise<{ file: IoFile; end: number; commitSeq: number; tornTail: number }> {
  const io = opts.fileIo;
  const jPath = `${dataDir}/${journalFile(sb.journalGen)}`;
  const st = await io.stat(jPath);
  if (!st) throw corrupt(jPath, 'journal file named by the superblock is missing');
  const jf = await io.open(jPath, opts.inspectOnly ? 'r' : 'rw');
  const size = st.size;
  const hb = Buffer.alloc(JOURNAL_HEADER_LEN);
  const h = decodeJournalHeader(hb.subarray(0, await jf.read(hb, 0, JOURNAL_HEADER_LEN, 0)));
  if (typeof h === 'string') throw corrupt(jPath, h);
  if (h.gen !== sb.journalGen) throw corrupt(jPath, `journal generation ${h.gen}, superblock expects ${sb.journalGen}`);
  if (size < sb.checkpointLen) throw corrupt(jPath, `truncated: ${size} bytes, checkpoint needs ${sb.checkpointLen}`);
  const piece = opts.pieceBytes ?? RECORD_PIECE_BYTES;
  // The checkpoint must be whole: it was synced before the superblock named it. Its records are
  // applied as they are read (a piece at a time: the journal is never one buffer); a damaged one
  // refuses the store, so what was applied before it does not matter.
  let end = JOURNAL_HEADER_LEN;
  let commitSeq = 0;
  let cpDone = false;
  // Every page of the checkpoint full, plus an eighth for the writes after open (ChunkClass.reserve).
  const slotsHint = Math.floor(sb.checkpointLen / PAGE_RECORD_BYTES) * ENTRIES_PER_PAGE * RESERVE_HEADROOM;
  const cp: CheckpointTables = { pages: new Map(), l1s: new Map(), slotsHint, reserved: new Set() };
  try {
    end = await scanFileRecords(jf, JOURNAL_HEADER_LEN, sb.checkpointLen, piece, (r) => {
      if (r.rec.type === Rec.Commit) {
        commitSeq = r.rec.u64();
        cpDone = true;
        return false;
      }
      applyRecord(catalog, chunks, r.rec, cp);
      return true;
    });
  } catch (e) {
    throw corrupt(jPath, `bad checkpoint record: ${(e as Error).message}`, e);
  }
  if (!cpDone || end !== sb.checkpointLen) throw corrupt(jPath, 'checkpoint damaged (checksum or length mismatch)');
  // The log: a transaction's records are held until its Commit (the pieces they lie in with them).
  let txn: RecordReader[] = [];
  try {
    await scanFileRecords(jf, end, size, piece, (r) => {
      if (r.rec.type === Rec.Commit) {
        const seq = r.rec.u64();
        if (seq !== commitSeq + 1) return false; // a stale commit from an earlier, truncated tail
        for (const rec of txn) applyRecord(catalog, chunks, rec, null);
        txn = [];
        commitSeq = seq;
        end = r.end;
        return true;
      }
      txn.push(r.rec);
      return true;
    });
  } catch (e) {
    throw corrupt(jPath, `bad log record: ${(e as Error).message}`, e);
  }
  repatch(catalog);
  // Reads follow chains of partial slots recursively: a loop or an overlong chain refuses the store.
  for (const c of chunks.classes.values()) {
    const s = c.partials.tooDeep();
    if (s !== undefined) throw corrupt(jPath, `partial slot ${s} (chunk size ${c.chunkSize}) lies in a chain deeper than ${CHAIN_DEPTH_MAX} or in a loop`);
  }
  const tornTail = size - end;
  if (tornTail > 0 && !opts.inspectOnly) {
    opts.log('warn', `${jPath}: ignoring ${tornTail} bytes of uncommitted journal tail`);
    await jf.truncate(end);
    await jf.datasync();
  }
  for (const c of chunks.classes.values()) c.deriveState();
  return { file: jf, end, commitSeq, tornTail };
}

/** Deletes what no committed state references: stale journals, empty segment files, segment tails. */
async function reclaimFiles(io: FileIo, dataDir: string, journalGen: number, chunks: DataStore, log: LogFn): Promise<void> {
  for (const name of await io.readdir(dataDir)) {
    const jm = JOURNAL_FILE_RE.exec(name);
    if (jm && Number(jm[1]) !== journalGen) {
      log('info', `removing stale journal ${name}`);
      await io.unlink(`${dataDir}/${name}`);
      continue;
    }
    const sm = SEGMENT_FILE_RE.exec(name);
    if (!sm) continue;
    const cls = chunks.classes.get(Number(sm[1]));
    const seg = Number(sm[2]);
    if (!cls || (cls.segUse[seg] ?? 0) === 0) {
      log('info', `reclaiming unreferenced segment ${name}`);
      await io.unlink(`${dataDir}/${name}`);
      continue;
    }
    const end = cls.usedEnd(seg);
    const st = await io.stat(`${dataDir}/${name}`);
    if (st && st.size > end) {
      log('info', `reclaiming ${st.size - end} unreferenced bytes at the end of ${name}`);
      const f = await io.open(`${dataDir}/${name}`, 'rw');
      await f.truncate(end);
      await f.close();
    }
  }
}

/**
 * The checkpoint stores every page whole: pages that were patch pages (map-page.ts) become
 * patches again, each volume's nodes compared in the order they forked (snapshots by id, the
 * head last), so a restart does not bring back the 4 KiB copies.
 */
function repatch(catalog: Catalog): void {
  const chains = new Map<unknown, NodeMap[]>();
  const heads: { vol: unknown; map: NodeMap }[] = [];
  for (const n of catalog.allNodes()) {
    if (n.kind === 'head') heads.push({ vol: n.vol, map: n.map });
    else {
      const chain = chains.get(n.vol);
      if (chain) chain.push(n.map);
      else chains.set(n.vol, [n.map]);
    }
  }
  for (const h of heads) {
    const chain = chains.get(h.vol);
    if (chain) patchSimilarPages([...chain, h.map]);
  }
}
