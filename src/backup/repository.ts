// The layout of a target (documented in src/backup/README.md):
//   snapnbd-backup.json         the target's format, block size, and whether (and with which key) it is encrypted
//   blocks/NN/NAME              one block, NAME = SHA-256 (or keyed HMAC) of its plain bytes
//   manifests/ID                one per complete backup, written after all its blocks
//   inprogress/ID               a running backup's marker, rewritten as a heartbeat, removed at the end
//   gc.lock                     present while a garbage collection runs
// This file maps those names to objects and checks what it reads; the rules that use them live in
// create.ts, restore.ts, verify.ts and gc.ts.
import { BackupError, BackupErrorCode } from './errors.ts';
import { keySealer, loadKey, plainSealer, SEAL_OVERHEAD, type Sealer } from './crypto.ts';
import { hashPool, type HashResult } from './hash-pool.ts';
import { BACKUP_BLOCK_SIZE, decodeManifest, encodeManifest, type Manifest } from './manifest.ts';
import type { ObjectEntry, ObjectStore, TargetSpec } from './target.ts';

export const CONFIG_KEY = 'snapnbd-backup.json';
export const BLOCKS_PREFIX = 'blocks/';
export const MANIFESTS_PREFIX = 'manifests/';
export const MARKERS_PREFIX = 'inprogress/';
export const GC_LOCK_KEY = 'gc.lock';
export const TARGET_FORMAT = 1;

interface TargetConfig {
  format: number;
  blockSize: number;
  encrypted: boolean;
  keyCheck: string | null;
}

export interface MarkerInfo {
  id: string;
  volume: string;
  snapshot: string;
  source: string;
  started: string;
}

export class Repository {
  readonly store: ObjectStore;
  readonly sealer: Sealer;
  readonly blockSize: number;
  /** Manifests are immutable: one read each. */
  private readonly manifests = new Map<string, Manifest>();

  private constructor(store: ObjectStore, sealer: Sealer, blockSize: number) {
    this.store = store;
    this.sealer = sealer;
    this.blockSize = blockSize;
  }

  /** Opens the target, creating its config on first use; refuses a key that does not fit. */
  static async open(store: ObjectStore, spec: TargetSpec): Promise<Repository> {
    await store.check();
    const sealer = spec.keyFile === null ? plainSealer : keySealer(loadKey(spec.keyFile));
    const raw = await store.get(CONFIG_KEY);
    let cfg: TargetConfig;
    if (raw === null) {
      cfg = { format: TARGET_FORMAT, blockSize: BACKUP_BLOCK_SIZE, encrypted: sealer.encrypted, keyCheck: sealer.keyCheck };
      await store.put(CONFIG_KEY, Buffer.from(JSON.stringify(cfg) + '\n'));
    } else {
      try {
        cfg = JSON.parse(raw.toString('utf8')) as TargetConfig;
      } catch {
        throw new BackupError(BackupErrorCode.BackupCorrupt, `${store.display}: ${CONFIG_KEY} is not JSON`);
      }
      if (cfg.format !== TARGET_FORMAT || !Number.isSafeInteger(cfg.blockSize) || cfg.blockSize <= 0) {
        throw new BackupError(BackupErrorCode.BackupCorrupt, `${store.display}: ${CONFIG_KEY} has format ${String(cfg.format)}; this server reads ${TARGET_FORMAT}`);
      }
      if (cfg.encrypted && !sealer.encrypted) {
        throw new BackupError(BackupErrorCode.KeyMismatch, `${store.display} is encrypted: give its key file (?encrypt=/path/keyfile)`);
      }
      if (!cfg.encrypted && sealer.encrypted) {
        throw new BackupError(BackupErrorCode.KeyMismatch, `${store.display} is not encrypted, but a key file was given`);
      }
      if (cfg.encrypted && cfg.keyCheck !== sealer.keyCheck) {
        throw new BackupError(BackupErrorCode.KeyMismatch, `${store.display} is encrypted with another key`);
      }
    }
    return new Repository(store, sealer, cfg.blockSize);
  }

  blockKey(name: string): string {
    return `${BLOCKS_PREFIX}${name.slice(0, 2)}/${name}`;
  }

  /** The most bytes a block's object holds: a buffer this long receives any valid one. */
  get objectCapacity(): number {
    return this.blockSize + (this.sealer.encrypted ? SEAL_OVERHEAD : 0);
  }

  /**
   * A block's name, hashed off the event loop (hash-pool.ts): `data` is transferred there and
   * back, so the caller goes on with the result's `data`, not its own (detached) Buffer.
   */
  nameBlock(data: Buffer): Promise<HashResult> {
    return hashPool.hash(data, this.sealer.nameKey);
  }

  /** Stores a block named `name`; `plain` is free again when this resolves. */
  async putBlock(name: string, plain: Buffer, signal?: AbortSignal): Promise<void> {
    const key = this.blockKey(name);
    // A plain block's name is its SHA-256: the request's signature uses it as the payload hash.
    if (this.sealer.nameKey === null && !this.sealer.encrypted) return this.store.put(key, plain, signal, name);
    const sealed = await hashPool.hash(this.sealer.seal(plain, `block:${name}`));
    await this.store.put(key, sealed.data, signal, sealed.hex);
  }

  hasBlock(name: string, signal?: AbortSignal): Promise<boolean> {
    return this.store.exists(this.blockKey(name), signal);
  }

  /**
   * The block's plain bytes, checked against its name (hashed off the event loop);
   * BACKUP_CORRUPT naming `what` and the object. With `into` (objectCapacity bytes at least), a
   * plain block is received into it and comes back in the same memory (as another Buffer:
   * `into` itself is detached by the hash's transfer and must not be used again).
   */
  async getBlock(name: string, what: string, signal?: AbortSignal, into?: Buffer): Promise<Buffer> {
    const key = this.blockKey(name);
    const raw = await this.store.get(key, signal, into);
    if (raw === null) throw new BackupError(BackupErrorCode.BackupCorrupt, `${what}: object ${key} is missing from ${this.store.display}`);
    const plain = this.sealer.open(raw, `block:${name}`, `${what}: object ${key}`);
    const checked = await hashPool.hash(plain, this.sealer.nameKey);
    if (checked.hex !== name) {
      throw new BackupError(BackupErrorCode.BackupCorrupt, `${what}: object ${key} does not match its hash (corrupt)`);
    }
    return checked.data;
  }

  async *listBlocks(): AsyncIterable<ObjectEntry & { name: string }> {
    for await (const o of this.store.list(BLOCKS_PREFIX)) {
      const name = o.key.slice(o.key.lastIndexOf('/') + 1);
      if (/^[0-9a-f]{64}$/.test(name)) yield { ...o, name };
    }
  }

  async putManifest(m: Manifest, signal?: AbortSignal): Promise<void> {
    await this.store.put(MANIFESTS_PREFIX + m.id, this.sealer.seal(encodeManifest(m), `manifest:${m.id}`), signal);
    this.manifests.set(m.id, m);
  }

  async getManifest(id: string): Promise<Manifest | null> {
    const cached = this.manifests.get(id);
    if (cached) return cached;
    const raw = await this.store.get(MANIFESTS_PREFIX + id);
    if (raw === null) return null;
    const what = `${MANIFESTS_PREFIX}${id}`;
    const m = decodeManifest(this.sealer.open(raw, `manifest:${id}`, what), what);
    if (m.id !== id) throw new BackupError(BackupErrorCode.BackupCorrupt, `manifest ${what} names itself ${m.id}`);
    this.manifests.set(id, m);
    return m;
  }

  async manifestIds(): Promise<string[]> {
    const ids: string[] = [];
    for await (const o of this.store.list(MANIFESTS_PREFIX)) ids.push(o.key.slice(MANIFESTS_PREFIX.length));
    for (const id of [...this.manifests.keys()]) if (!ids.includes(id)) this.manifests.delete(id);
    return ids;
  }

  async deleteManifest(id: string): Promise<void> {
    await this.store.delete(MANIFESTS_PREFIX + id);
    this.manifests.delete(id);
  }

  async putMarker(info: MarkerInfo): Promise<void> {
    await this.store.put(MARKERS_PREFIX + info.id, Buffer.from(JSON.stringify(info)));
  }

  deleteMarker(id: string): Promise<void> {
    return this.store.delete(MARKERS_PREFIX + id);
  }

  async markers(): Promise<(ObjectEntry & { info: MarkerInfo | null })[]> {
    const out: (ObjectEntry & { info: MarkerInfo | null })[] = [];
    for await (const o of this.store.list(MARKERS_PREFIX)) {
      const raw = await this.store.get(o.key);
      let info: MarkerInfo | null = null;
      try { info = raw === null ? null : JSON.parse(raw.toString('utf8')) as MarkerInfo; } catch { info = null; }
      out.push({ ...o, info });
    }
    return out;
  }

  async gcLock(): Promise<ObjectEntry | null> {
    for await (const o of this.store.list(GC_LOCK_KEY)) if (o.key === GC_LOCK_KEY) return o;
    return null;
  }
}
