// Journal records applied to the catalog: `applyRecord` replays one committed record into it
// (recovery), a checkpoint's (written by checkpoint.ts) or the log's. Map pages and L1s are
// written once however many nodes share them, so a checkpoint keeps the sharing.
import { ENTRIES_PER_PAGE, isSlot, L1, NodeMap, Page, UNMAPPED } from './block-map.ts';
import type { Catalog } from './catalog.ts';
import type { DataStore } from './chunk-store.ts';
import { Rec, type RecordReader } from './format.ts';
import { legacyGuid } from './guid.ts';
import {
  decodeL1, decodeMapRun, decodeNode, decodePage, decodeResize, decodeRollback, decodeSlotValid, decodeState, decodeVolume,
} from './records.ts';
import { BACKING_BASE, emptyBits } from './partial-slots.ts';

/** Pages and L1s of the checkpoint being replayed, by their record ids. */
export interface CheckpointTables {
  pages: Map<number, Page>;
  l1s: Map<number, L1>;
  /** Slots each chunk class's tables are sized for at its first page (ChunkClass.reserve); 0: none. */
  slotsHint: number;
  /** Classes already sized. */
  reserved: Set<number>;
}

/**
 * Applies one committed record to the catalog. `cp` holds the tables of the checkpoint being
 * read, null for the log after it (Page, L1 and NodeCp records belong to checkpoints only).
 * Throws on a record that names what does not exist (the caller reports the journal corrupt).
 */
export function applyRecord(catalog: Catalog, chunks: DataStore, r: RecordReader, cp: CheckpointTables | null): void {
  switch (r.type) {
    case Rec.State: {
      const s = decodeState(r);
      catalog.setCounters(s.epoch, s.nextId);
      return;
    }
    case Rec.Volume:
      catalog.addVolume(decodeVolume(r));
      return;
    case Rec.VolumeDelete:
      catalog.dropVolume(catalog.volumeById(r.u32()));
      return;
    case Rec.Node:
    case Rec.NodeCp: {
      const { node, source } = decodeNode(r);
      const vol = catalog.volumeById(node.volumeId);
      // A head has its volume's size; so has a snapshot recorded before resize existed.
      if (node.kind === 'head' || node.size < 0) node.size = vol.size;
      const nChunks = Math.ceil(node.size / vol.chunkSize);
      let map: NodeMap;
      if (r.type === Rec.NodeCp) {
        const l1 = cp?.l1s.get(source);
        if (!l1) throw new Error(`node ${node.id} names unknown L1 ${source}`);
        if (l1.pages.length !== Math.ceil(nChunks / ENTRIES_PER_PAGE)) throw new Error(`node ${node.id}: L1 ${source} does not fit its size ${node.size}`);
        l1.refs++;
        map = new NodeMap(nChunks, vol.chunkClass, l1);
      } else if (source === 0) map = new NodeMap(nChunks, vol.chunkClass);
      else {
        map = catalog.node(source).map.share();
        if (map.nChunks !== nChunks) throw new Error(`node ${node.id}: its source ${source} has ${map.nChunks} chunks, not ${nChunks}`);
      }
      if (node.kind === 'snap' && node.guid === '') node.guid = legacyGuid(vol.createdMs, vol.name, node.id, node.createdMs, node.name);
      catalog.addNode(node, vol, map);
      return;
    }
    case Rec.NodeDelete:
      catalog.dropNode(catalog.node(r.u32()));
      catalog.finishReleasesSync();
      return;
    case Rec.MapRun: {
      const run = decodeMapRun(r);
      const map = catalog.node(run.nodeId).map;
      const e = run.entries;
      for (let i = 0; i < run.n; i++) map.set(run.first + i, e[i * 2] as number, e[i * 2 + 1] as number);
      return;
    }
    case Rec.Resize: {
      const rs = decodeResize(r);
      catalog.setVolumeSize(catalog.volumeById(rs.volumeId), rs.size);
      return;
    }
    case Rec.Rollback: {
      const rb = decodeRollback(r);
      catalog.assignMap(catalog.node(rb.headId), catalog.node(rb.snapshotId));
      return;
    }
    case Rec.Page: {
      if (!cp) throw new Error('PAGE record outside a checkpoint');
      const p = new Page();
      p.refs = 0;
      const e = p.mutable();
      const rec = decodePage(r, e);
      const cls = chunks.classOf(rec.chunkSize);
      if (!cp.reserved.has(rec.chunkSize)) {
        cp.reserved.add(rec.chunkSize);
        cls.reserve(cp.slotsHint);
      }
      for (let i = 0; i < e.length; i += 2) {
        const s = e[i] as number;
        if (s !== UNMAPPED) p.mapped++;
        if (isSlot(s)) cls.ref(s);
      }
      cp.pages.set(rec.id, p);
      return;
    }
    case Rec.L1: {
      if (!cp) throw new Error('L1 record outside a checkpoint');
      const rec = decodeL1(r);
      const l1 = new L1(rec.len);
      l1.refs = 0;
      for (let i = 0; i < rec.pairs.length; i += 2) {
        const idx = rec.pairs[i] as number;
        const p = cp.pages.get(rec.pairs[i + 1] as number);
        if (!p || idx >= rec.len) throw new Error(`L1 ${rec.id} entry ${idx} is bad`);
        p.refs++;
        l1.pages[idx] = p;
      }
      cp.l1s.set(rec.id, l1);
      return;
    }
    case Rec.SlotValid: {
      const rec = decodeSlotValid(r);
      const cls = chunks.classes.get(Math.log2(rec.chunkSize));
      if (!cls || cls.chunkSize !== rec.chunkSize) throw new Error(`SLOT_VALID names chunk size ${rec.chunkSize} of no volume`);
      if (!isSlot(rec.slot)) throw new Error(`SLOT_VALID names slot ${rec.slot}`);
      if (rec.base === UNMAPPED) {
        cls.partials.clear(rec.slot);
        return;
      }
      if ((!isSlot(rec.base) && rec.base !== BACKING_BASE) || rec.base === rec.slot || rec.bits.length !== emptyBits(rec.chunkSize).length) {
        throw new Error(`SLOT_VALID of slot ${rec.slot} is bad`);
      }
      cls.partials.set(rec.slot, rec.base, rec.bits, rec.at);
      return;
    }
    default:
      throw new Error(`unknown record type ${r.type}`);
  }
}
