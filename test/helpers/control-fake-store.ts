// An in-memory Store for UNIT tests of the registry, the control methods and the CLI: plain
// buffers per node, full copies for snapshots (fine at test sizes). Integration tests use the
// real engine. `gate` lets a test hold an operation mid-way (to see 'creating' or races).
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from '../../src/storage/device.ts';
import {
  CHUNK_SIZE_DEFAULT, NAME_PATTERN, StoreError, StoreErrorCode,
  type DiffPage, type SnapshotInfo, type Store, type StoreStats, type VolumeInfo, type VolumeSpec,
} from '../../src/storage/types.ts';
import { newGuid } from '../../src/storage/guid.ts';

class MemDevice implements BlockDevice {
  readonly readOnly: boolean;
  readonly preferredBlockSize: number;
  readonly multiConn = true;
  data: Buffer;
  constructor(data: Buffer, readOnly: boolean, chunkSize: number) {
    this.data = data;
    this.readOnly = readOnly;
    this.preferredBlockSize = chunkSize;
  }
  get size(): number { return this.data.length; }
  async read(offset: number, length: number, into: Buffer): Promise<void> { this.data.copy(into, 0, offset, offset + length); }
  async write(offset: number, data: Buffer, _o: WriteOptions): Promise<void> {
    if (this.readOnly) throw new Error('read-only');
    data.copy(this.data, offset);
  }
  async trim(offset: number, length: number): Promise<void> { this.data.fill(0, offset, offset + length); }
  async zero(offset: number, length: number, _o: ZeroOptions): Promise<void> { this.data.fill(0, offset, offset + length); }
  async flush(): Promise<void> {}
  async cache(): Promise<void> {}
  async extents(_offset: number, length: number): Promise<Extent[]> { return [{ length, hole: false, zero: false }]; }
}

interface Snap { info: SnapshotInfo; data: Buffer; view: MemDevice }
interface Vol { info: VolumeInfo; head: MemDevice; snaps: Map<string, Snap> }

export class FakeStore implements Store {
  readonly dataDir = '/nonexistent/fake';
  readonly volumes = new Map<string, Vol>();
  /** Operations in call order, e.g. 'rollback vm1@s1'. */
  readonly log: string[] = [];
  /** When set, mutating operations await it before acting (a test resolves it). */
  gate: Promise<void> | null = null;
  private clock = Date.parse('2026-01-02T03:04:05Z');

  private now(): string {
    this.clock += 1000;
    return new Date(this.clock).toISOString().replace(/\.\d+Z$/, 'Z');
  }

  private vol(name: string): Vol {
    const v = this.volumes.get(name);
    if (!v) throw new StoreError(StoreErrorCode.VolumeNotFound, `volume '${name}' not found`);
    return v;
  }

  private snap(volume: string, name: string): Snap {
    const s = this.vol(volume).snaps.get(name);
    if (!s) throw new StoreError(StoreErrorCode.SnapshotNotFound, `snapshot '${volume}@${name}' not found`);
    return s;
  }

  private async pass(): Promise<void> {
    if (this.gate) await this.gate;
  }

  listVolumes(): VolumeInfo[] { return [...this.volumes.values()].map((v) => this.volumeInfo(v.info.name)); }

  volumeInfo(name: string): VolumeInfo {
    const v = this.vol(name);
    return { ...v.info, snapshots: v.snaps.size, space: { referenced: v.head.size, used: v.head.size, written: 0 } };
  }

  async createVolume(spec: VolumeSpec): Promise<VolumeInfo> {
    if (!NAME_PATTERN.test(spec.name)) throw new StoreError(StoreErrorCode.InvalidName, `bad name ${spec.name}`);
    if (this.volumes.has(spec.name)) throw new StoreError(StoreErrorCode.NameTaken, `volume '${spec.name}' exists`);
    const size = spec.size ?? 0;
    if (size % 512 !== 0 || size <= 0) throw new StoreError(StoreErrorCode.InvalidArgument, 'size must be a positive multiple of 512');
    const chunkSize = spec.chunkSize ?? CHUNK_SIZE_DEFAULT;
    await this.pass();
    this.volumes.set(spec.name, {
      info: { name: spec.name, size, chunkSize, backing: spec.backing ?? null, origin: null, created: this.now(), snapshots: 0, space: { referenced: 0, used: 0, written: 0 }, unavailable: null },
      head: new MemDevice(Buffer.alloc(size), false, chunkSize),
      snaps: new Map(),
    });
    this.log.push(`createVolume ${spec.name}`);
    return this.volumeInfo(spec.name);
  }

  async deleteVolume(name: string): Promise<void> {
    this.vol(name);
    await this.pass();
    this.volumes.delete(name);
    this.log.push(`deleteVolume ${name}`);
  }

  head(volume: string): BlockDevice { return this.available(volume).head; }
  attachFill(): BlockDevice { throw new Error('the fake store has no fill hook'); }
  /** The head's bytes (tests look inside). */
  headData(volume: string): Buffer { return this.vol(volume).head.data; }
  snapshotView(volume: string, snapshot: string): BlockDevice {
    this.available(volume);
    return this.snap(volume, snapshot).view;
  }

  private available(volume: string): Vol {
    const v = this.vol(volume);
    if (v.info.unavailable !== null) throw new StoreError(StoreErrorCode.BackingChanged, v.info.unavailable);
    return v;
  }

  async createSnapshot(volume: string, name: string, description?: string, guid?: string): Promise<SnapshotInfo> {
    const v = this.vol(volume);
    if (v.snaps.has(name)) throw new StoreError(StoreErrorCode.NameTaken, `snapshot '${volume}@${name}' exists`);
    await this.pass();
    const data = Buffer.from(v.head.data);
    const info: SnapshotInfo = {
      volume, name, created: this.now(), description: description ?? '', size: data.length,
      space: { referenced: data.length, used: 0, written: 0 }, clones: [], durable: true, unavailable: null, guid: guid ?? newGuid(),
    };
    v.snaps.set(name, { info, data, view: new MemDevice(data, true, v.info.chunkSize) });
    this.log.push(`createSnapshot ${volume}@${name}`);
    return { ...info };
  }

  listSnapshots(volume: string, only?: ReadonlySet<string>): SnapshotInfo[] {
    return [...this.vol(volume).snaps.values()].filter((s) => only === undefined || only.has(s.info.name)).map((s) => this.snapshotInfo(volume, s.info.name));
  }
  snapshotInfo(volume: string, name: string): SnapshotInfo { return { ...this.snap(volume, name).info, unavailable: this.vol(volume).info.unavailable }; }

  /** Marks a volume unavailable as the engine does for a changed backing file (tests). */
  makeUnavailable(volume: string, reason: string): void { this.vol(volume).info.unavailable = reason; }

  /** Like the engine: connected holders keep the old device (and size); snapshots keep theirs. */
  async resizeVolume(name: string, size: number, opts: { shrink?: boolean } = {}): Promise<VolumeInfo> {
    const v = this.vol(name);
    if (size % 512 !== 0 || size <= 0) throw new StoreError(StoreErrorCode.InvalidArgument, 'size must be a positive multiple of 512');
    if (size < v.info.size && !opts.shrink) throw new StoreError(StoreErrorCode.ShrinkNotConfirmed, `volume '${name}' would shrink`);
    if (size < v.info.size && [...v.snaps.values()].some((s) => s.info.size > size)) {
      throw new StoreError(StoreErrorCode.VolumeHasSnapshots, `volume '${name}' has snapshots longer than ${size}`);
    }
    await this.pass();
    const data = Buffer.alloc(size);
    v.head.data.copy(data, 0, 0, Math.min(size, v.head.data.length));
    v.head = new MemDevice(data, false, v.info.chunkSize);
    v.info.size = size;
    this.log.push(`resizeVolume ${name} ${size}`);
    return this.volumeInfo(name);
  }

  async acceptBacking(name: string): Promise<{ info: VolumeInfo; accepted: string | null }> {
    const v = this.vol(name);
    if (v.info.backing === null) throw new StoreError(StoreErrorCode.InvalidArgument, `volume '${name}' has no backing file`);
    await this.pass();
    const accepted = v.info.unavailable;
    v.info.unavailable = null;
    this.log.push(`acceptBacking ${name}`);
    return { info: this.volumeInfo(name), accepted };
  }

  async deleteSnapshot(volume: string, name: string): Promise<void> {
    this.snap(volume, name);
    // Like the engine: dropped from the catalog at once, then the commit is awaited.
    this.vol(volume).snaps.delete(name);
    await this.pass();
    this.log.push(`deleteSnapshot ${volume}@${name}`);
  }

  async rollback(volume: string, snapshot: string): Promise<void> {
    const s = this.snap(volume, snapshot);
    await this.pass();
    s.data.copy(this.vol(volume).head.data);
    this.log.push(`rollback ${volume}@${snapshot}`);
  }

  async clone(volume: string, snapshot: string, newName: string): Promise<VolumeInfo> {
    const s = this.snap(volume, snapshot);
    if (this.volumes.has(newName)) throw new StoreError(StoreErrorCode.NameTaken, `volume '${newName}' exists`);
    await this.pass();
    const chunkSize = this.vol(volume).info.chunkSize;
    this.volumes.set(newName, {
      info: { name: newName, size: s.data.length, chunkSize, backing: null, origin: { volume, snapshot }, created: this.now(), snapshots: 0, space: { referenced: 0, used: 0, written: 0 }, unavailable: null },
      head: new MemDevice(Buffer.from(s.data), false, chunkSize),
      snaps: new Map(),
    });
    s.info.clones.push(newName);
    this.log.push(`clone ${volume}@${snapshot} ${newName}`);
    return this.volumeInfo(newName);
  }

  async diff(volume: string, from: string, to: string | null, page: { start?: number; limit?: number } = {}): Promise<DiffPage> {
    const v = this.vol(volume);
    const a = this.snap(volume, from).data;
    const b = to === null ? v.head.data : this.snap(volume, to).data;
    const cs = v.info.chunkSize;
    const extents: { offset: number; length: number }[] = [];
    const limit = page.limit ?? Infinity;
    for (let off = page.start ?? 0; off < a.length; off += cs) {
      if (a.subarray(off, off + cs).equals(b.subarray(off, off + cs))) continue;
      const last = extents[extents.length - 1];
      if (last && last.offset + last.length === off) last.length += cs;
      else {
        if (extents.length === limit) return { extents, next: off };
        extents.push({ offset: off, length: cs });
      }
    }
    return { extents, next: null };
  }

  async flush(): Promise<void> {}
  stats(): StoreStats {
    let snapshots = 0;
    for (const v of this.volumes.values()) snapshots += v.snaps.size;
    return { allocatedBytes: 0, liveBytes: 0, volumes: this.volumes.size, snapshots, full: false, freeBytes: 0 };
  }
  async close(): Promise<void> {}
}
