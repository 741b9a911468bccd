// A seeded random model harness for the storage engine: applies operations to the engine and to
// plain Buffers (one per node), compares every read, and after simulated crashes checks the
// DESIGN.md §3 invariants: bytes untouched since the last commit read back exactly, bytes written
// since then read as one of the values they held (never data from elsewhere), snapshots never
// change, control operations are all there. Used by the property and crash tests.
import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import { openCowStore } from '../../src/storage/index.ts';
import type { CowStore } from '../../src/storage/engine.ts';
import { SimFileIo, SimCrash, prng } from '../../src/storage/sim-file-io.ts';
import { checkStore } from '../../src/storage/check.ts';
import { isSlot } from '../../src/storage/block-map.ts';
import { spaceOf, walkSpace } from '../../src/storage/accounting.ts';
import { BACKING_BASE } from '../../src/storage/partial-slots.ts';
import { StorageError, UncommittedChangeError } from '../../src/storage/device.ts';
import type { CrashPoint, FileIo } from '../../src/storage/file-io.ts';

export const SECTOR = 512;
/** Guests' write unit: block-aligned partial-chunk writes make partial slots. */
const BLOCK = 4096;
/** Spans two map pages at 4 KiB chunks, so page-level sharing is exercised. */
const V0_SIZE = 2560 * 1024;
const V0_CHUNK = 8192;

interface ModelVol {
  head: Buffer;
  chunkSize: number;
  snaps: Map<string, { data: Buffer; hash: string }>;
  /** Sector -> the values it may hold after a crash (durable value first). */
  dirty: Map<number, Buffer[]>;
}

export function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface HarnessOptions {
  seed: number;
  ops: number;
  io?: FileIo;
  dir?: string;
  /** Arm a crash point during operations (sim only). */
  crashPoints?: readonly CrashPoint[];
  journalCompactBytes?: number;
  /** Bytes per piece the journal is read and checkpoints written in (default: the engine's). */
  pieceBytes?: number;
  /** Chance per operation of arming a crash point (default 0.03). */
  armProbability?: number;
  /** Chance per operation of a compact operation (default 0.04, at most 0.11). */
  compactProbability?: number;
  /**
   * Chance per operation (sim only, default 0) of squeezing the file system to a few KiB of free
   * space for a few operations: writes, commits and control operations then fail with ENOSPC
   * and must leave the store consistent; once space is back, a flush makes everything durable.
   */
  squeezeProbability?: number;
  /**
   * Chance per operation (sim only, when no crashPoints are given) of a power loss at a random
   * crash point within the next operation, whichever point that is (default 0).
   */
  midOpCrashProbability?: number;
  /** The engine sees the simulated file system through this (a test's faulty variant). */
  wrapSim?: (sim: SimFileIo) => FileIo;
  /**
   * Chance per operation (default 0, so older seeds replay unchanged) of a volume resize: a grow
   * by up to 1 MiB, or a shrink (refused while a snapshot is longer), sizes in whole sectors.
   */
  resizeProbability?: number;
}

/** Resize operations keep heads between these sizes (the model holds every head in memory). */
const RESIZE_MIN = 64 * 1024;
const RESIZE_MAX = 4 * 1024 * 1024;

export class Harness {
  readonly rand: () => number;
  readonly sim: SimFileIo | null;
  readonly io: FileIo;
  readonly dir: string;
  store!: CowStore;
  readonly model = new Map<string, ModelVol>();
  readonly log: string[] = [];
  /** Messages of the armed crashes that fired (mid-operation). */
  readonly crashes: string[] = [];
  /** Every power loss: armed ones and the `crash` operation's (between operations). */
  powerLosses = 0;
  /** The operation each mid-operation crash cut (its log line). */
  readonly crashedOps: string[] = [];
  /** Resizes done, and shrinks refused because a snapshot was longer. */
  resizes = 0;
  resizesRefused = 0;
  backing: Buffer | null = null;
  backingPath = '';
  /** Segments emptied by compact operations. */
  compacted = 0;
  /** Times the space counters were compared with a walk. */
  countersChecked = 0;
  /** Most partial slots (src/storage/partial-slots.ts) seen after a write. */
  partialsMax = 0;
  /** Most partial slots over the backing file (BACKING_BASE) seen after a write. */
  backingPartialsMax = 0;
  /** Operations that failed with ENOSPC during squeezes (tests assert there were some). */
  noSpaceFailures = 0;
  /** Operations left in the current squeeze (0: none). */
  private squeeze = 0;
  private names = 0;
  private readonly opts: HarnessOptions;

  constructor(opts: HarnessOptions) {
    this.opts = opts;
    this.rand = prng(opts.seed);
    this.sim = opts.io ? null : new SimFileIo();
    this.io = opts.io ?? (opts.wrapSim ? opts.wrapSim(this.sim!) : this.sim!);
    this.dir = opts.dir ?? '/store';
  }

  int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  pick<T>(a: T[]): T {
    return a[this.int(a.length)] as T;
  }

  async open(): Promise<void> {
    this.store = await openCowStore(this.dir, {
      fileIo: this.io, commitIntervalMs: 0, segmentBytes: 64 * 1024,
      journalCompactBytes: this.opts.journalCompactBytes ?? 48 * 1024,
      ...(this.opts.pieceBytes ? { pieceBytes: this.opts.pieceBytes } : {}),
    });
    // Compaction runs only as a seeded operation: a timer would make runs irreproducible.
    this.store.autoCompact = false;
  }

  async setup(backingPath: string, writeBacking: (p: string, b: Buffer) => Promise<void>): Promise<void> {
    const size = 300 * 1024 + 512; // not chunk aligned: reads past its end are zeros
    this.backing = Buffer.alloc(size);
    for (let i = 0; i < size; i++) this.backing[i] = this.int(256);
    this.backingPath = backingPath;
    await writeBacking(backingPath, this.backing);
    await this.open();
    // 8 KiB chunks: a 4 KiB first write over the backing file makes a partial slot over it.
    await this.store.createVolume({ name: 'v0', size: V0_SIZE, chunkSize: V0_CHUNK, backing: backingPath });
    const h0 = Buffer.alloc(V0_SIZE);
    this.backing.copy(h0);
    this.model.set('v0', { head: h0, chunkSize: V0_CHUNK, snaps: new Map(), dirty: new Map() });
    await this.store.createVolume({ name: 'v1', size: 384 * 1024, chunkSize: 16384 });
    this.model.set('v1', { head: Buffer.alloc(384 * 1024), chunkSize: 16384, snaps: new Map(), dirty: new Map() });
  }

  /** setup() on the simulated file system: the backing image written and synced there. */
  async setupSim(backingPath = '/backing.img'): Promise<void> {
    await this.setup(backingPath, async (p, b) => {
      const f = await this.io.open(p, 'create');
      await f.write(b, 0, b.length, 0);
      await f.datasync();
      await this.io.syncDir('/');
    });
  }

  /** Every commit makes all answered writes durable: forget the crash candidates. */
  committed(): void {
    for (const m of this.model.values()) m.dirty.clear();
  }

  /** Records that [off, off+len) of a head is about to change to `to`. */
  private touch(m: ModelVol, off: number, len: number): void {
    for (let s = Math.floor(off / SECTOR); s * SECTOR < off + len; s++) {
      if (!m.dirty.has(s)) m.dirty.set(s, [Buffer.from(m.head.subarray(s * SECTOR, (s + 1) * SECTOR))]);
    }
  }

  private settleTouch(m: ModelVol, off: number, len: number): void {
    for (let s = Math.floor(off / SECTOR); s * SECTOR < off + len; s++) {
      m.dirty.get(s)!.push(Buffer.from(m.head.subarray(s * SECTOR, (s + 1) * SECTOR)));
    }
  }

  randomRange(size: number, chunk: number): { off: number; len: number } {
    const r = this.rand();
    let off: number;
    let len: number;
    if (r < 0.5) {
      // Hot windows (start, the 2 MiB map-page boundary, end): chunks get rewritten after snapshots.
      const hot = this.pick([0, 2048 * 1024 - 32 * 1024, size - 64 * 1024].filter((x) => x >= 0 && x < size));
      off = Math.min(size - SECTOR, hot + this.int(64 * 1024 / SECTOR) * SECTOR);
      len = Math.min(size - off, (1 + this.int(2 * chunk / SECTOR)) * SECTOR);
    } else if (r < 0.7) {
      // chunk aligned
      off = this.int(size / chunk) * chunk;
      len = Math.min(size - off, (1 + this.int(4)) * chunk);
    } else {
      off = this.int(size / SECTOR) * SECTOR;
      len = Math.min(size - off, (1 + this.int(3 * chunk / SECTOR)) * SECTOR);
    }
    if (r < 0.5 || r >= 0.7) {
      // Often whole 4 KiB blocks, as guests write: partial slots (src/storage/partial-slots.ts).
      if (this.rand() < 0.5) {
        off -= off % BLOCK;
        len = Math.min(size - off, Math.ceil(len / BLOCK) * BLOCK);
      }
    }
    return { off, len };
  }

  async step(): Promise<void> {
    if (this.squeeze > 0 && --this.squeeze === 0) {
      await this.endSqueeze();
      return;
    }
    const sq = this.opts.squeezeProbability ?? 0;
    if (sq > 0 && this.squeeze === 0 && this.sim && !this.sim.armed && this.rand() < sq) {
      const room = this.int(4) * 16 * 1024;
      this.squeeze = 2 + this.int(8);
      this.sim.capacity = this.sim.usedBytes() + room;
      this.log.push(`squeeze: ${room} bytes free for ${this.squeeze - 1} ops`);
      return;
    }
    const vols = [...this.model.keys()];
    const name = this.pick(vols);
    const m = this.model.get(name)!;
    const dev = this.store.head(name);
    const rp = this.opts.resizeProbability ?? 0;
    if (rp > 0 && this.squeeze === 0 && this.rand() < rp) {
      await this.resizeStep(name, m);
      return;
    }
    const r = this.rand();
    if (r < 0.32) {
      const { off, len } = this.randomRange(m.head.length, m.chunkSize);
      const data = Buffer.alloc(len);
      for (let i = 0; i < len; i += 64) data.fill((this.int(255) + 1) & 0xff, i, Math.min(len, i + 64));
      const fua = this.rand() < 0.1;
      this.log.push(`write ${name} ${off} ${len}${fua ? ' fua' : ''}`);
      const old = Buffer.from(m.head.subarray(off, off + len));
      this.touch(m, off, len);
      data.copy(m.head, off);
      this.settleTouch(m, off, len);
      // Every other write as a socket payload in odd-sized pieces (no rand(): same seeds, same runs).
      const pieces = (off / SECTOR) % 2 === 1 ? splitPieces(data, 1000 + (off % 7777)) : null;
      const wrote = pieces ? dev.writeGather!(off, pieces, len, { fua }) : dev.write(off, data, { fua });
      const ok = await this.unlessNoSpace(wrote, () => this.adoptFailedWrite(name, m, off, len, old));
      if (fua && ok) this.committed();
      let partials = 0;
      let backed = 0;
      for (const cls of this.store.inspect().classes) {
        partials += cls.partials.size;
        for (const [, p] of cls.partials.entries()) if (p.base === BACKING_BASE) backed++;
      }
      this.partialsMax = Math.max(this.partialsMax, partials);
      this.backingPartialsMax = Math.max(this.backingPartialsMax, backed);
    } else if (r < 0.42) {
      const { off, len } = this.randomRange(m.head.length, m.chunkSize);
      const kind = this.int(3);
      this.log.push(`${['trim', 'zero', 'zero-nohole'][kind]} ${name} ${off} ${len}`);
      const old = Buffer.from(m.head.subarray(off, off + len));
      this.touch(m, off, len);
      m.head.fill(0, off, off + len);
      this.settleTouch(m, off, len);
      const op = kind === 0 ? dev.trim(off, len, { fua: false }) : dev.zero(off, len, { fua: false, noHole: kind === 2, fast: false });
      await this.unlessNoSpace(op, () => this.adoptFailedWrite(name, m, off, len, old));
    } else if (r < 0.52) {
      const { off, len } = this.randomRange(m.head.length, m.chunkSize);
      const got = Buffer.alloc(len);
      await dev.read(off, len, got);
      this.expectEq(got, m.head.subarray(off, off + len), `read ${name} ${off} ${len}`);
    } else if (r < 0.57) {
      this.log.push('flush');
      if (await this.unlessNoSpace(dev.flush())) this.committed();
    } else if (r < 0.63) {
      const sn = `s${this.names++}`;
      this.log.push(`snapshot ${name}@${sn}`);
      const ok = await this.unlessUncommitted(this.store.createSnapshot(name, sn));
      m.snaps.set(sn, { data: Buffer.from(m.head), hash: sha(m.head) });
      if (ok) this.committed();
    } else if (r < 0.67 && m.snaps.size > 0) {
      const sn = this.pick([...m.snaps.keys()]);
      this.log.push(`delete ${name}@${sn}`);
      const ok = await this.unlessUncommitted(this.store.deleteSnapshot(name, sn));
      m.snaps.delete(sn);
      if (ok) this.committed();
    } else if (r < 0.70 && m.snaps.size > 0) {
      const sn = this.pick([...m.snaps.keys()]);
      this.log.push(`rollback ${name}@${sn}`);
      const ok = await this.unlessUncommitted(this.store.rollback(name, sn));
      m.head = rolledBack(m, m.snaps.get(sn)!.data);
      if (ok) this.committed();
    } else if (r < 0.73 && m.snaps.size > 0 && this.model.size < 6) {
      const sn = this.pick([...m.snaps.keys()]);
      const cn = `c${this.names++}`;
      this.log.push(`clone ${name}@${sn} ${cn}`);
      const ok = await this.unlessUncommitted(this.store.clone(name, sn, cn));
      this.model.set(cn, { head: Buffer.from(m.snaps.get(sn)!.data), chunkSize: m.chunkSize, snaps: new Map(), dirty: new Map() });
      if (ok) this.committed();
    } else if (r < 0.74 && this.model.size > 2 && name !== 'v0' && name !== 'v1') {
      this.log.push(`delete-volume ${name}`);
      const ok = await this.unlessUncommitted(this.store.deleteVolume(name));
      this.model.delete(name);
      if (ok) this.committed();
    } else if (r < 0.78 && m.snaps.size > 0) {
      await this.checkDiff(name, m);
    } else if (r < 0.80 && m.snaps.size > 0) {
      const sn = this.pick([...m.snaps.keys()]);
      const s = m.snaps.get(sn)!;
      const got = Buffer.alloc(s.data.length);
      await this.store.snapshotView(name, sn).read(0, got.length, got);
      this.expectEq(got, s.data, `snapshot ${name}@${sn} changed`);
    } else if (r < 0.84) {
      await this.checkExtents(name, m);
    } else if (r < 0.88 && this.squeeze > 0) {
      // No reopen (its closing commit would fail) and no crash while space is short: the model
      // cannot yet say which waiting control changes a crash then keeps (all or none of them).
    } else if (r < 0.86) {
      this.log.push('reopen');
      await this.store.close();
      this.committed();
      await this.open();
      await this.verifyAll('after reopen');
    } else if (r < 0.88 && this.sim) {
      this.log.push('crash');
      await this.crashNow();
    } else if (r < 0.89) {
      this.log.push('checkpoint');
      if (await this.unlessNoSpace(this.store.checkpoint())) this.committed();
    } else if (r < 0.89 + (this.opts.compactProbability ?? 0.04)) {
      // Half the time with a write to the head and a snapshot read running alongside: the write
      // may hit a chunk being copied (it must redirect), the read may look up a slot being moved.
      const side: Promise<void>[] = [];
      let what = '';
      if (this.squeeze === 0 && this.rand() < 0.5) {
        // Started a few scheduling steps into the pass (the simulated I/O yields once per call),
        // aimed at a chunk of the segment being emptied when there is one.
        const yields = this.int(40);
        const later = async (): Promise<void> => {
          for (let i = 0; i < yields; i++) await Promise.resolve();
        };
        const fill = (this.int(255) + 1) & 0xff;
        const fallback = this.randomRange(m.head.length, m.chunkSize);
        what = ` + write ${name}`;
        side.push(later().then(() => {
          const { off, len } = this.chunkBeingMoved(name) ?? fallback;
          this.log.push(`write ${name} ${off} ${len} (during compaction)`);
          this.touch(m, off, len);
          m.head.fill(fill, off, off + len);
          this.settleTouch(m, off, len);
          return dev.write(off, Buffer.alloc(len, fill), { fua: false });
        }));
        if (m.snaps.size > 0) {
          const sn = this.pick([...m.snaps.keys()]);
          const s = m.snaps.get(sn)!;
          const got = Buffer.alloc(s.data.length);
          what += ` + read ${name}@${sn}`;
          side.push(later().then(() => this.store.snapshotView(name, sn).read(0, got.length, got))
            .then(() => this.expectEq(got, s.data, `snapshot ${name}@${sn} read during compaction`)));
        }
      }
      this.log.push(`compact${what}`);
      if (this.squeeze > 0) {
        // Copies or the checkpoint may fail: nothing is lost, the data reads the same.
        await this.unlessNoSpace(this.store.compact());
        await this.verifyAll('after compaction short of space');
        return;
      }
      const [st] = await Promise.all([this.store.compact(), ...side]);
      this.compacted += st.segments;
      // A pass that remapped chunks ends with a checkpoint: every write answered before is durable.
      if (st.chunksMoved > 0 && side.length === 0) this.committed();
      if (st.chunksMoved > 0) await this.verifyAll('after compaction');
    }
  }

  /** Grows or shrinks a volume (whole sectors, often inside a chunk), as the store must. */
  private async resizeStep(name: string, m: ModelVol): Promise<void> {
    const cur = m.head.length;
    const longest = Math.max(0, ...[...m.snaps.values()].map((x) => x.data.length));
    const grow = cur <= RESIZE_MIN || (cur < RESIZE_MAX && this.rand() < 0.55);
    const size = grow
      ? Math.min(RESIZE_MAX, cur + (1 + this.int(2048)) * SECTOR)
      : Math.max(RESIZE_MIN, cur - (1 + this.int(cur / SECTOR / 2)) * SECTOR);
    if (size < longest) {
      this.log.push(`resize-refused ${name} ${size}`);
      await expect(this.store.resizeVolume(name, size, { shrink: true })).rejects.toMatchObject({ code: 'VOLUME_HAS_SNAPSHOTS' });
      this.resizesRefused++;
      return;
    }
    this.log.push(`resize ${name} ${size}`);
    await this.store.resizeVolume(name, size, { shrink: true });
    resizeModel(m, size);
    this.resizes++;
    this.committed();
  }

  /**
   * Awaits `op`; during a squeeze an ENOSPC failure is expected: counts it, runs `onFail` and
   * returns false. Outside a squeeze every error is a failure of the test.
   */
  private async unlessNoSpace(op: Promise<unknown>, onFail?: () => Promise<void>): Promise<boolean> {
    try {
      await op;
      return true;
    } catch (e) {
      if (this.squeeze === 0 || !(e instanceof StorageError) || e.errno !== 'ENOSPC') throw e;
      this.noSpaceFailures++;
      this.log.push(`  -> ENOSPC: ${e.message.slice(0, 120)}`);
      await onFail?.();
      return false;
    }
  }

  /** A control operation short of space: it must say its change is applied (and keep it). */
  private async unlessUncommitted(op: Promise<unknown>): Promise<boolean> {
    try {
      await op;
      return true;
    } catch (e) {
      if (this.squeeze === 0 || !(e instanceof UncommittedChangeError)) throw e;
      this.noSpaceFailures++;
      this.log.push(`  -> applied, not durable: ${e.errno}`);
      return false;
    }
  }

  /**
   * A write (or zero) that failed: each sector holds the old or the new value (whole runs fail,
   * in-place runs may have landed); the model adopts what the store reads, and both values stay
   * crash candidates.
   */
  private async adoptFailedWrite(name: string, m: ModelVol, off: number, len: number, old: Buffer): Promise<void> {
    const got = Buffer.alloc(len);
    await this.store.head(name).read(off, len, got);
    for (let s = 0; s * SECTOR < len; s++) {
      const sec = got.subarray(s * SECTOR, (s + 1) * SECTOR);
      if (!sec.equals(old.subarray(s * SECTOR, (s + 1) * SECTOR)) && !sec.equals(m.head.subarray(off + s * SECTOR, off + (s + 1) * SECTOR))) {
        throw new Error(`failed write ${name} ${off} ${len}: sector ${s} holds neither the old nor the new data`);
      }
    }
    got.copy(m.head, off);
    this.settleTouch(m, off, len);
  }

  /** Space is back: the next commit must succeed and make every change durable. */
  private async endSqueeze(): Promise<void> {
    this.sim!.capacity = Infinity;
    this.log.push('space back, flush');
    await this.store.flush();
    this.committed();
    for (const name of this.model.keys()) {
      for (const s of this.store.listSnapshots(name)) expect(s.durable, `${name}@${s.name} durable after the flush`).toBe(true);
    }
    await this.verifyAll('after space came back');
  }

  /** Part of a head chunk whose slot lies in a segment being compacted, if any (white box). */
  chunkBeingMoved(name: string): { off: number; len: number } | null {
    const vol = this.store.inspect().volume(name);
    if (!vol || vol.chunkClass.evacuating.size === 0) return null;
    const map = vol.head.map;
    const start = this.int(vol.nChunks);
    for (let i = 0; i < vol.nChunks; i++) {
      const c = (start + i) % vol.nChunks;
      const s = map.slot(c);
      if (!isSlot(s) || !vol.chunkClass.isEvacuating(s)) continue;
      // Sometimes a partial chunk (a merge read of the old slot), sometimes all of it.
      const cStart = c * vol.chunkSize;
      const chunkLen = Math.min(vol.chunkSize, vol.size - cStart);
      const len = this.rand() < 0.5 ? chunkLen : SECTOR;
      return { off: cStart + (len === chunkLen ? 0 : this.int(chunkLen / SECTOR) * SECTOR), len };
    }
    return null;
  }

  async crashNow(): Promise<void> {
    this.sim!.kill();
    this.store.abandon();
    this.sim!.crash(this.rand);
    this.powerLosses++;
    await this.recoverAndCheck('after crash');
  }

  /** Reopens after a crash and checks the invariants; adopts what survived as the new model. */
  async recoverAndCheck(when: string): Promise<void> {
    await this.open();
    for (const [name, m] of this.model) {
      const got = Buffer.alloc(m.head.length);
      await this.store.head(name).read(0, got.length, got);
      for (let s = 0; s * SECTOR < got.length; s++) {
        const sec = got.subarray(s * SECTOR, (s + 1) * SECTOR);
        const cands = m.dirty.get(s);
        if (!cands) {
          if (!sec.equals(m.head.subarray(s * SECTOR, (s + 1) * SECTOR))) {
            throw new Error(`${when}: ${name} sector ${s} lost an answered-and-committed write`);
          }
        } else if (!cands.some((c) => c.equals(sec))) {
          throw new Error(`${when}: ${name} sector ${s} holds data it never held (${cands.length} candidates)`);
        }
      }
      got.copy(m.head);
      m.dirty.clear();
      await this.verifySnapshots(name, m, when);
    }
    expect(this.store.listVolumes().map((v) => v.name).sort()).toEqual([...this.model.keys()].sort());
    await this.checkSpace(when);
  }

  private expectEq(got: Buffer, want: Buffer, what: string): void {
    if (got.equals(want)) return;
    let i = 0;
    while (got[i] === want[i]) i++;
    throw new Error(`${what}: differs at byte ${i} (got ${got[i]}, want ${want[i]})`);
  }

  async verifySnapshots(name: string, m: ModelVol, when: string): Promise<void> {
    const names = this.store.listSnapshots(name).map((s) => s.name).sort();
    expect(names, `${when}: snapshots of ${name}`).toEqual([...m.snaps.keys()].sort());
    for (const [sn, s] of m.snaps) {
      const got = Buffer.alloc(s.data.length);
      await this.store.snapshotView(name, sn).read(0, got.length, got);
      if (sha(got) !== s.hash) this.expectEq(got, s.data, `${when}: snapshot ${name}@${sn} changed`);
    }
  }

  async verifyAll(when: string): Promise<void> {
    for (const [name, m] of this.model) {
      const got = Buffer.alloc(m.head.length);
      await this.store.head(name).read(0, got.length, got);
      this.expectEq(got, m.head, `${when}: head ${name}`);
      await this.verifySnapshots(name, m, when);
    }
  }

  /** The space counters (space.ts) equal a walk of every node's map (accounting.ts walkSpace). */
  checkCounters(when: string): void {
    this.countersChecked++;
    for (const n of this.store.inspect().nodes) {
      const label = `${when}: space of ${n.vol.name}${n.kind === 'head' ? '' : `@${n.name}`}`;
      expect(spaceOf(n), label).toEqual(walkSpace(n));
    }
  }

  /** allocated slots = mapped chunks: every live slot is held by some node. */
  async checkSpace(when: string): Promise<void> {
    for (const cls of this.store.inspect().classes) {
      for (let s = 0; s < cls.refs.length; s++) {
        if (cls.state[s] === 1 && cls.refs[s] === 0 && !cls.pendingFree.includes(s)) {
          // Allowed only while quarantined or pending; after open there are none.
          throw new Error(`${when}: slot ${s} allocated but unmapped`);
        }
      }
    }
  }

  async checkDiff(name: string, m: ModelVol): Promise<void> {
    const snaps = [...m.snaps.keys()];
    const from = this.pick(snaps);
    const to = this.rand() < 0.5 ? null : this.pick(snaps);
    const a = m.snaps.get(from)!.data;
    const b = to === null ? m.head : m.snaps.get(to)!.data;
    // Over `to`'s size (a resize in between): what `from` had there, zeros past its end.
    const applied = Buffer.alloc(b.length);
    a.copy(applied, 0, 0, Math.min(a.length, b.length));
    let start = 0;
    let prevEnd = -1;
    for (;;) {
      const page = await this.store.diff(name, from, to, { start, limit: 1 + this.int(3) });
      for (const e of page.extents) {
        expect(e.offset).toBeGreaterThan(prevEnd);
        prevEnd = e.offset + e.length;
        b.copy(applied, e.offset, e.offset, e.offset + e.length);
      }
      if (page.next === null) break;
      start = page.next;
    }
    this.expectEq(applied, b, `diff ${name} ${from}->${to ?? 'head'} applied`);
    if (to === from) expect((await this.store.diff(name, from, to)).extents).toEqual([]);
  }

  async checkExtents(name: string, m: ModelVol): Promise<void> {
    const { off, len } = this.randomRange(m.head.length, m.chunkSize);
    const ext = await this.store.head(name).extents(off, len);
    let pos = off;
    for (const e of ext) {
      expect(e.length).toBeGreaterThan(0);
      if (e.zero) {
        const end = Math.min(pos + e.length, m.head.length);
        for (let i = pos; i < end; i++) if (m.head[i] !== 0) throw new Error(`extent at ${pos}+${e.length} says zero, byte ${i} is ${m.head[i]}`);
      }
      pos += e.length;
    }
    expect(pos).toBeGreaterThan(off);
  }

  async run(ops = this.opts.ops): Promise<void> {
    for (let i = 0; i < ops; i++) {
      if (this.sim && this.opts.crashPoints && !this.sim.armed && this.squeeze === 0 && this.rand() < (this.opts.armProbability ?? 0.03)) {
        const point = this.pick([...this.opts.crashPoints]);
        this.sim.armCrash(point, 1 + this.int(3));
        this.log.push(`arm ${point}`);
      } else if (this.sim && !this.opts.crashPoints && this.squeeze === 0 && (this.opts.midOpCrashProbability ?? 0) > 0 && this.rand() < this.opts.midOpCrashProbability!) {
        const n = 1 + this.int(12);
        this.sim.armCrash(null, n);
        this.log.push(`arm any point, hit ${n}`);
      }
      try {
        await this.step();
        // A crash point hit by background work (segment reclaim) kills the boot without failing
        // the operation: the power is out all the same, so recover now rather than verify a dead store.
        if (this.sim?.dead) throw new SimCrash(this.sim.lastCrash ?? 'in the background');
        this.checkCounters(`after op ${i}`);
      } catch (e) {
        if (!(e instanceof SimCrash) && !(this.sim?.dead && isDeadError(e))) throw e;
        const at = this.sim!.lastCrash ?? (e as Error).message;
        this.crashedOps.push(this.log.filter((l) => !l.startsWith('crashed') && !l.startsWith('arm')).at(-1) ?? '');
        this.log.push(`crashed: ${at}`);
        this.store.abandon();
        this.sim!.crash(this.rand);
        this.powerLosses++;
        // The interrupted operation may or may not have happened.
        await this.reconcileInterrupted();
        await this.recoverAndCheck(`after a crash at ${at}`);
        this.checkCounters(`after a crash at ${at}`);
        this.crashes.push(at);
      }
      if (!this.opts.crashPoints) this.sim?.disarm();
    }
    this.sim?.disarm();
    if (this.squeeze > 0) {
      this.squeeze = 0;
      await this.endSqueeze();
    }
    await this.verifyAll('at the end');
  }

  /**
   * A control operation cut by the crash is all or nothing: adopt what the store shows for the
   * snapshot/volume lists (after checking it is either state), and mark touched data dirty.
   */
  private async reconcileInterrupted(): Promise<void> {
    const last = this.log.filter((l) => !l.startsWith('crashed') && !l.startsWith('arm')).at(-1) ?? '';
    await this.open();
    const [op, arg = '', arg2 = ''] = last.split(' ');
    const vols = new Set(this.store.listVolumes().map((v) => v.name));
    for (const name of vols) {
      if (this.model.has(name)) continue;
      if (op !== 'clone' || arg2 !== name) throw new Error(`volume ${name} appeared in a crash during '${last}'`);
      const [sv, sn] = arg.split('@') as [string, string];
      const src = this.model.get(sv)!;
      this.model.set(name, { head: Buffer.from(src.snaps.get(sn)!.data), chunkSize: src.chunkSize, snaps: new Map(), dirty: new Map() });
    }
    for (const name of [...this.model.keys()]) {
      if (vols.has(name)) continue;
      if (op !== 'delete-volume' || arg !== name) throw new Error(`volume ${name} vanished in a crash during '${last}'`);
      this.model.delete(name);
    }
    for (const [name, m] of this.model) {
      const size = this.store.volumeInfo(name).size;
      if (size !== m.head.length) {
        if (op !== 'resize' || arg !== name || size !== Number(arg2)) throw new Error(`volume ${name} is ${size} bytes after a crash during '${last}'`);
        resizeModel(m, size);
      }
      const snaps = new Set(this.store.listSnapshots(name).map((s) => s.name));
      for (const sn of snaps) {
        if (m.snaps.has(sn)) continue;
        if (op !== 'snapshot' || arg !== `${name}@${sn}`) throw new Error(`snapshot ${name}@${sn} appeared in a crash during '${last}'`);
        // The create committed: it holds the head as it was, every answered write included.
        m.snaps.set(sn, { data: Buffer.from(m.head), hash: sha(m.head) });
      }
      for (const sn of [...m.snaps.keys()]) {
        if (snaps.has(sn)) continue;
        if (op !== 'delete' || arg !== `${name}@${sn}`) throw new Error(`snapshot ${name}@${sn} vanished in a crash during '${last}'`);
        m.snaps.delete(sn);
      }
      if (op === 'rollback' && arg.startsWith(`${name}@`)) {
        const s = m.snaps.get(arg.slice(name.length + 1));
        const got = Buffer.alloc(m.head.length);
        await this.store.head(name).read(0, got.length, got);
        if (s && got.equals(rolledBack(m, s.data))) {
          m.head = rolledBack(m, s.data);
          m.dirty.clear();
        }
      }
    }
    this.store.abandon();
  }
}

/** The head after a rollback: the snapshot's bytes, zeros past its end up to the head's own size. */
function rolledBack(m: ModelVol, snap: Buffer): Buffer {
  const h = Buffer.alloc(m.head.length);
  snap.copy(h, 0, 0, Math.min(snap.length, h.length));
  return h;
}

/** A resize: bytes kept up to the new end, zeros past the old one; no crash candidates past the end. */
function resizeModel(m: ModelVol, size: number): void {
  const h = Buffer.alloc(size);
  m.head.copy(h, 0, 0, Math.min(size, m.head.length));
  m.head = h;
  for (const s of [...m.dirty.keys()]) if (s * SECTOR >= size) m.dirty.delete(s);
}

function isDeadError(e: unknown): boolean {
  return e instanceof SimCrash || (e as Error | undefined)?.message?.includes('simulated power loss') === true ||
    (e as { cause?: unknown } | undefined)?.cause instanceof SimCrash;
}

export async function runCheckOn(h: Harness): Promise<void> {
  await h.store.close();
  const r = await checkStore(h.dir, { repair: false, fileIo: h.io });
  expect(r.problems, 'check after a clean close').toEqual([]);
  expect(r.ok).toBe(true);
}

export const ALL_SIM = true;

/** One node of a compaction scenario and the bytes it must read back. */
export interface NodeModel {
  volume: string;
  /** null = the head. */
  snapshot: string | null;
  data: Buffer;
}

/** Distinct, position-dependent content (a misplaced chunk never compares equal). */
export function patternBuf(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ Math.imul(seed, 40503)) >>> 0, i);
  return b;
}

/**
 * A store whose low segments end up 1/4 live with the free slots scattered through them (every
 * 4th chunk kept): fill a volume, snapshot 'a', rewrite 3 of 4 chunks, snapshot 'b', clone it
 * and write the clone (whole and partial chunks), snapshot the clone, trim part of the head,
 * delete 'a', flush. Returns every node with the content it must read. Volume 'v' is `chunks`
 * chunks of `chunkSize`; segments of 16 chunks make the low 16 segments candidates.
 */
export async function buildSparseStore(store: CowStore, chunkSize: number, chunks: number): Promise<NodeModel[]> {
  const size = chunkSize * chunks;
  await store.createVolume({ name: 'v', size, chunkSize });
  const v = store.head('v');
  const head = patternBuf(size, 1);
  const step = 16 * chunkSize;
  for (let off = 0; off < size; off += step) await v.write(off, head.subarray(off, Math.min(size, off + step)), { fua: false });
  await store.createSnapshot('v', 'a');
  const fresh = patternBuf(size, 2);
  for (let c = 0; c < chunks; c++) {
    if (c % 4 === 0) continue;
    fresh.copy(head, c * chunkSize, c * chunkSize, (c + 1) * chunkSize);
    await v.write(c * chunkSize, head.subarray(c * chunkSize, (c + 1) * chunkSize), { fua: false });
  }
  await store.createSnapshot('v', 'b');
  const b = Buffer.from(head);
  await store.clone('v', 'b', 'w');
  const w = Buffer.from(b);
  const wdev = store.head('w');
  const third = patternBuf(size, 3);
  for (let c = 0; c < chunks; c += 8) {
    third.copy(w, c * chunkSize, c * chunkSize, (c + 1) * chunkSize);
    await wdev.write(c * chunkSize, w.subarray(c * chunkSize, (c + 1) * chunkSize), { fua: false });
  }
  await store.createSnapshot('w', 'w1');
  const w1 = Buffer.from(w);
  for (let c = 3; c < chunks; c += 16) {
    const off = c * chunkSize + 512;
    const part = patternBuf(1024, 4 + c);
    part.copy(w, off);
    await wdev.write(off, part, { fua: false });
  }
  const t0 = Math.floor(chunks / 2) * chunkSize;
  const tLen = Math.floor(chunks / 8) * chunkSize;
  head.fill(0, t0, t0 + tLen);
  await v.trim(t0, tLen, { fua: false });
  await store.deleteSnapshot('v', 'a');
  await store.flush();
  await store.settle();
  return [
    { volume: 'v', snapshot: null, data: head },
    { volume: 'v', snapshot: 'b', data: b },
    { volume: 'w', snapshot: null, data: w },
    { volume: 'w', snapshot: 'w1', data: w1 },
  ];
}

/** Every node reads back exactly its model. */
export async function verifyNodes(store: CowStore, nodes: NodeModel[], when: string): Promise<void> {
  for (const n of nodes) {
    const dev = n.snapshot === null ? store.head(n.volume) : store.snapshotView(n.volume, n.snapshot);
    const got = Buffer.alloc(n.data.length);
    await dev.read(0, got.length, got);
    if (got.equals(n.data)) continue;
    let i = 0;
    while (got[i] === n.data[i]) i++;
    throw new Error(`${when}: ${n.volume}${n.snapshot === null ? '' : `@${n.snapshot}`} differs at byte ${i}`);
  }
}

/** `data` as views of `size` bytes each (the last shorter), like a payload the socket split. */
function splitPieces(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) out.push(data.subarray(at, Math.min(data.length, at + size)));
  return out;
}
