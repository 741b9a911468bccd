// Offline verification (`snapnbd check`): opens the store without writing anything, re-derives
// every reference count and space counter from the maps and compares, checks every mapped slot lies in an existing
// segment, and lists leaks (files or file tails nothing references, stale journals, an
// uncommitted journal tail). `repair` removes leaks; inconsistencies it cannot fix are reported.
// It takes the store lock (store-lock.ts) like any opener: a store a server has open is refused.
import { walkSpace } from './accounting.ts';
import { isSlot, type L1, type Page } from './block-map.ts';
import { baseIsSlot, validEnd } from './partial-slots.ts';
import { SEGMENT_FILE_RE, segmentFile } from './chunk-store.ts';
import { SEGMENT_BYTES_DEFAULT } from './chunk-store.ts';
import { CowStore } from './engine.ts';
import { realFileIo, type FileIo } from './file-io.ts';
import { JOURNAL_FILE_RE, journalFile } from './format.ts';
import { COMMIT_INTERVAL_DEFAULT_MS, JOURNAL_COMPACT_BYTES_DEFAULT } from './journal.ts';
import { lockStoreFor } from './store-lock.ts';
import { StoreError } from './types.ts';

export interface CheckResult {
  ok: boolean;
  problems: string[];
  repaired: string[];
}

/** Throws StoreError STORE_LOCKED (naming the holder) when another process has the store open. */
export async function checkStore(dataDir: string, opts: { repair: boolean; fileIo?: FileIo }): Promise<CheckResult> {
  const io = opts.fileIo ?? realFileIo;
  const dir = dataDir.replace(/\/+$/, '') || '/';
  let lock;
  try {
    lock = await lockStoreFor(dir, io, () => ({ command: opts.repair ? 'snapnbd check --repair' : 'snapnbd check' }));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, problems: [`${dir}: no such directory (no store here)`], repaired: [] };
    throw e;
  }
  try {
    return await checkLocked(dir, io, opts.repair);
  } finally {
    await lock?.release();
  }
}

async function checkLocked(dir: string, io: FileIo, repair: boolean): Promise<CheckResult> {
  const problems: string[] = [];
  const repaired: string[] = [];
  let unrepaired = 0;
  let store: CowStore;
  try {
    store = await CowStore.open(dir, {
      fileIo: io, commitIntervalMs: COMMIT_INTERVAL_DEFAULT_MS, log: () => undefined,
      segmentBytes: SEGMENT_BYTES_DEFAULT, journalCompactBytes: JOURNAL_COMPACT_BYTES_DEFAULT, inspectOnly: true,
    });
  } catch (e) {
    if (e instanceof StoreError) return { ok: false, problems: [e.message], repaired };
    throw e;
  }
  const bad = (msg: string): void => {
    problems.push(msg);
    unrepaired++;
  };
  const state = store.inspect();
  try {
    // 1. Maps are well formed; page and L1 reference counts match their holders.
    const l1Holders = new Map<L1, number>();
    for (const n of state.nodes) {
      try {
        n.map.checkValid();
      } catch (e) {
        bad(`volume '${n.vol.name}' ${n.kind === 'head' ? 'head' : `snapshot '${n.name}'`}: ${(e as Error).message}`);
      }
      l1Holders.set(n.map.l1, (l1Holders.get(n.map.l1) ?? 0) + 1);
    }
    const pageHolders = new Map<Page, { n: number; chunkSize: number }>();
    for (const [l1, holders] of l1Holders) {
      if (l1.refs !== holders) bad(`an L1 table has refcount ${l1.refs} but ${holders} holders`);
      const owner = state.nodes.find((n) => n.map.l1 === l1)!;
      for (const p of l1.pages) {
        if (!p) continue;
        const h = pageHolders.get(p);
        if (h) h.n++;
        else pageHolders.set(p, { n: 1, chunkSize: owner.vol.chunkSize });
      }
    }
    const slotRefs = new Map<number, Map<number, number>>(); // chunk size -> slot -> refs
    for (const [p, h] of pageHolders) {
      if (p.refs !== h.n) bad(`a map page has refcount ${p.refs} but ${h.n} holders`);
      let refs = slotRefs.get(h.chunkSize);
      if (!refs) slotRefs.set(h.chunkSize, (refs = new Map()));
      const e = p.view();
      for (let i = 0; i < e.length; i += 2) {
        const s = e[i] as number;
        if (isSlot(s)) refs.set(s, (refs.get(s) ?? 0) + 1);
      }
    }
    // A partial slot (partial-slots.ts) is mapped or the base of another, holds one reference on
    // its base, and its data reaches only its last valid block. (A chain too deep or looping
    // refuses the store at open: recovery.ts.)
    const partialEnd = new Map<number, Map<number, number>>(); // chunk size -> partial slot -> data end
    for (const cls of state.classes) {
      if (cls.partials.size === 0) continue;
      let refs = slotRefs.get(cls.chunkSize);
      if (!refs) slotRefs.set(cls.chunkSize, (refs = new Map()));
      const ends = new Map<number, number>();
      partialEnd.set(cls.chunkSize, ends);
      for (const [s, p] of cls.partials.entries()) {
        // No partial slot lies over `s` (no hold), so only maps can have put it in `refs`.
        if (cls.partials.holdsOn(s) === 0 && !refs.has(s)) bad(`partial slot ${s} (chunk size ${cls.chunkSize}) is in no map and no chain`);
        // A backing-file base (partial-slots.ts) holds no slot.
        if (baseIsSlot(p.base)) refs.set(p.base, (refs.get(p.base) ?? 0) + 1);
        ends.set(s, validEnd(p.bits, cls.chunkSize));
      }
    }
    // 2. Slot refcounts re-derived equal the engine's; every live slot has its segment file.
    const names = new Set(await io.readdir(dir));
    const liveEnd = new Map<string, number>(); // segment file -> end of its last live slot
    const dataEnd = new Map<string, number>(); // segment file -> end of its live data (partial slots: their valid blocks)
    for (const [chunkSize, derived] of slotRefs) {
      const chunkClass = state.chunkClass(chunkSize);
      const ends = partialEnd.get(chunkSize);
      for (const [s, n] of derived) {
        if (chunkClass.count(s) !== n) bad(`slot ${s} (chunk size ${chunkSize}) refcount ${chunkClass.count(s)} != derived ${n}`);
        const name = segmentFile(chunkClass.log2, chunkClass.segmentOf(s));
        const end = chunkClass.posOf(s) + chunkSize;
        if ((liveEnd.get(name) ?? 0) < end) liveEnd.set(name, end);
        const need = chunkClass.posOf(s) + (ends?.get(s) ?? chunkSize);
        if ((dataEnd.get(name) ?? 0) < need) dataEnd.set(name, need);
      }
      for (let s = 0; s < chunkClass.refs.length; s++) {
        if ((chunkClass.refs[s] as number) > 0 && !derived.has(s)) bad(`slot ${s} (chunk size ${chunkSize}) has refcount ${chunkClass.count(s)} but no map holds it`);
      }
    }
    for (const [name, end] of liveEnd) {
      if (!names.has(name)) {
        bad(`segment ${name} holds live chunks but is missing`);
        continue;
      }
      const st = await io.stat(`${dir}/${name}`);
      const need = dataEnd.get(name) ?? end;
      if (st && st.size < need) bad(`segment ${name} is ${st.size} bytes, live chunks reach ${need}`);
      else if (st && st.size > end) {
        problems.push(`leak: ${st.size - end} bytes past the last live chunk of ${name}`);
        if (repair) {
          const f = await io.open(`${dir}/${name}`, 'rw');
          await f.truncate(end);
          await f.datasync();
          await f.close();
          repaired.push(`truncated ${name} to ${end} bytes`);
        } else unrepaired++;
      }
    }
    // 3. Files nothing references.
    for (const name of names) {
      const stale = (SEGMENT_FILE_RE.test(name) && !liveEnd.has(name)) || (JOURNAL_FILE_RE.test(name) && name !== journalFile(state.journalGen));
      if (!stale) continue;
      problems.push(`leak: ${name} is not referenced`);
      if (repair) {
        await io.unlink(`${dir}/${name}`);
        repaired.push(`removed ${name}`);
      } else unrepaired++;
    }
    // 4. An uncommitted journal tail (a crash mid-commit): harmless, open ignores it.
    if (state.tornTail > 0) {
      const name = journalFile(state.journalGen);
      problems.push(`journal ${name} has ${state.tornTail} bytes of uncommitted tail`);
      if (repair) {
        const f = await io.open(`${dir}/${name}`, 'rw');
        await f.truncate(state.journalEnd);
        await f.datasync();
        await f.close();
        repaired.push(`truncated ${name} to ${state.journalEnd} bytes`);
      } else unrepaired++;
    }
    // 5. The space counters (space.ts, derived at open from distinct pages) equal a walk of each map.
    for (const n of state.nodes) {
      const got = store.spaceOf(n);
      const want = walkSpace(n);
      if (got.referenced !== want.referenced || got.used !== want.used || got.written !== want.written) {
        bad(`volume '${n.vol.name}' ${n.kind === 'head' ? 'head' : `snapshot '${n.name}'`}: space counters ${JSON.stringify(got)} != walked ${JSON.stringify(want)}`);
      }
    }
    // 6. Backing files unchanged.
    for (const v of state.volumes) {
      if (v.backingError) bad(`volume '${v.name}': ${v.backingError.message}`);
    }
  } finally {
    await store.close();
  }
  return { ok: unrepaired === 0, problems, repaired };
}
