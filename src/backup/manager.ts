// The backup manager: the named targets of `serve --backup-target`, the jobs, and the rules that
// join them to the volumes: one volume's backups run one at a time (several volumes at once),
// a snapshot being backed up cannot be deleted, a restore that fails leaves no volume behind.
// The control methods (src/control/backup-methods.ts) call only this.
import { hostname } from 'node:os';
import type { Store } from '../storage/types.ts';
import { KeyedMutex } from '../volumes/keyed-mutex.ts';
import { exportNameOf, type VolumeRegistry } from '../volumes/registry.ts';
import { log } from '../util/log.ts';
import { createBackup, type BackupResult } from './create.ts';
import { BackupError, BackupErrorCode, backupNotFound } from './errors.ts';
import { FileTarget } from './file-target.ts';
import { collectGarbage, GC_GRACE_MS_DEFAULT, GC_STALE_MS, type GcResult } from './gc.ts';
import { InstantRestores } from './instant-restores.ts';
import { INTERRUPTED, JobTable, type JobView } from './jobs.ts';
import { SavedResults, type SavedSnapshotState } from './saved-results.ts';
import { BACKUP_ID_PATTERN } from './manifest.ts';
import { selectKept, type RetentionPolicy } from './prune-policy.ts';
import { Repository } from './repository.ts';
import { restoreFailure, restoreInto } from './restore.ts';
import { S3Target } from './s3-target.ts';
import { decodePartialRestore, listRestoreFiles, partialFile, readStateFile, removeStateFile, writeFileAtomic, type PartialRestore } from './state-files.ts';
import type { ObjectStore, TargetSpec } from './target.ts';
import { limitUploads, UploadPacer } from './upload-limit.ts';
import { verifyTarget } from './verify.ts';

export interface BackupView {
  id: string;
  volume: string;
  snapshot: string;
  state: 'backed-up' | 'backing-up' | 'failed' | 'deleting';
  created: string;
  source: string;
  size: number;
  base: string | null;
  bytesUploaded: number;
  blocksReused: number;
  blocks: number;
}

export interface BackupManagerOptions {
  store: Store;
  registry: VolumeRegistry;
  targets: Map<string, TargetSpec>;
  /** Opens a target's object store (tests pass S3 client options through this). */
  openObjectStore?: (spec: TargetSpec) => ObjectStore;
}

export function defaultObjectStore(spec: TargetSpec): ObjectStore {
  return spec.kind === 's3' ? new S3Target(spec.location, spec.prefix) : new FileTarget(spec.location);
}

export class BackupManager {
  readonly jobs = new JobTable();
  readonly source: string;
  private readonly o: BackupManagerOptions;
  private readonly repos = new Map<string, Promise<Repository>>();
  private readonly volumeMutex = new KeyedMutex();
  /** `VOLUME@SNAPSHOT` -> backup state shown by snapshot.list. */
  private readonly snapState = new Map<string, string>();
  private readonly deleting = new Set<string>();
  private closing = false;
  readonly instant: InstantRestores;
  private readonly results: SavedResults;

  constructor(o: BackupManagerOptions) {
    this.o = o;
    this.source = `${hostname()}:${o.store.dataDir}`;
    o.registry.setSnapshotAnnotator((v, s) => this.snapshotState(v, s));
    this.results = new SavedResults(o.store.dataDir, () => this.resultsNow());
    this.loadResults();
    this.jobs.onChange = () => void this.results.save();
    this.instant = new InstantRestores({ store: o.store, registry: o.registry, jobs: this.jobs, repo: (t) => this.repo(t) });
    o.registry.setVolumeAnnotator((v) => this.instant.stateOf(v));
    this.instant.resume(); // before the NBD listeners open: unrestored blocks must never read as zeros
    this.removePartialRestores();
  }

  /** Reads each target's manifests once (in the background), so that after a restart
   *  snapshot lists show `backed-up` without waiting for a `backup.list`. */
  warm(): void {
    for (const name of this.o.targets.keys()) {
      this.list({ target: name }).catch((e: unknown) => log.warn(`backup target '${name}'`, e));
    }
  }

  targets(): { name: string; url: string; encrypted: boolean; uploadLimit: number | null }[] {
    return [...this.o.targets].map(([name, spec]) => ({ name, url: spec.display, encrypted: spec.keyFile !== null, uploadLimit: spec.uploadLimit }));
  }

  private spec(target: string): TargetSpec {
    const spec = this.o.targets.get(target);
    if (!spec) {
      const known = [...this.o.targets.keys()];
      throw new BackupError(BackupErrorCode.UnknownTarget,
        `no backup target '${target}' (${known.length ? `known: ${known.join(', ')}` : 'start serve with --backup-target NAME=URL'})`);
    }
    return spec;
  }

  private async repo(target: string): Promise<Repository> {
    const spec = this.spec(target);
    let p = this.repos.get(target);
    if (!p) {
      const pacer = spec.uploadLimit === null ? null : new UploadPacer(spec.uploadLimit);
      p = Repository.open(limitUploads((this.o.openObjectStore ?? defaultObjectStore)(spec), pacer), spec);
      this.repos.set(target, p);
      p.catch(() => this.repos.delete(target));
    }
    return p;
  }

  snapshotState(volume: string, snapshot: string): string | null {
    const key = exportNameOf(volume, snapshot);
    for (const j of this.jobs.list()) {
      if (j.kind === 'backup' && j.volume === volume && j.snapshot === snapshot && j.state === 'running') return `backing-up ${j.percent}%`;
    }
    return this.snapState.get(key) ?? null;
  }

  create(p: { target: string; volume: string; snapshot: string }): JobView {
    this.spec(p.target); // UNKNOWN_TARGET and SNAPSHOT_NOT_FOUND now, not in the job
    const info = this.o.store.snapshotInfo(p.volume, p.snapshot);
    const key = exportNameOf(p.volume, p.snapshot);
    const release = this.o.registry.holdSnapshot(p.volume, p.snapshot, `a backup of ${key} to '${p.target}'`);
    const job = this.jobs.start({ kind: 'backup', target: p.target, volume: p.volume, snapshot: p.snapshot }, async (ctx) => {
      try {
        const repo = await this.repo(p.target);
        const r = await this.volumeMutex.run([p.volume], () => createBackup({
          store: this.o.store, repo, volume: p.volume, snapshot: p.snapshot, source: this.source,
          signal: ctx.signal, progress: ctx.progress,
        }));
        if (this.o.store.snapshotInfo(p.volume, p.snapshot).created === info.created) this.snapState.set(key, 'backed-up');
        return r satisfies BackupResult;
      } catch (e) {
        this.snapState.set(key, ctx.signal.aborted ? 'failed: cancelled' : `failed: ${(e as Error).message}`);
        throw e;
      } finally {
        release();
      }
    });
    return job;
  }

  async list(p: { target: string; volume?: string }): Promise<BackupView[]> {
    const repo = await this.repo(p.target);
    const out: BackupView[] = [];
    for (const id of await repo.manifestIds()) {
      const m = await repo.getManifest(id);
      if (!m || (p.volume !== undefined && m.volume !== p.volume)) continue;
      out.push({
        id, volume: m.volume, snapshot: m.snapshot, state: this.deleting.has(id) ? 'deleting' : 'backed-up',
        created: m.created, source: m.source, size: m.size, base: m.base,
        bytesUploaded: m.bytesUploaded, blocksReused: m.blocksReused, blocks: m.blocks.length,
      });
      if (m.source === this.source && this.localSnapshotIs(m.volume, m.snapshot, m.snapshotCreated)) {
        this.snapState.set(exportNameOf(m.volume, m.snapshot), 'backed-up');
      }
    }
    for (const mk of await repo.markers()) {
      const i = mk.info;
      if (!i || (p.volume !== undefined && i.volume !== p.volume)) continue;
      const live = Date.now() - mk.lastModified.getTime() <= GC_STALE_MS;
      out.push({
        id: i.id, volume: i.volume, snapshot: i.snapshot, state: live ? 'backing-up' : 'failed',
        created: i.started, source: i.source, size: 0, base: null, bytesUploaded: 0, blocksReused: 0, blocks: 0,
      });
    }
    return out.sort((a, b) => (a.created < b.created ? -1 : a.created > b.created ? 1 : 0));
  }

  /** `--instant`: answers once the volume is usable; its job restores the rest in the background. */
  async restoreInstant(p: { target: string; id: string; volume: string }): Promise<JobView> {
    this.spec(p.target);
    this.checkId(p.id);
    const repo = await this.repo(p.target);
    const m = await repo.getManifest(p.id);
    if (!m) throw backupNotFound(p.target, p.id);
    return this.instant.start(p.target, m, p.volume);
  }

  restore(p: { target: string; id: string; volume: string }): JobView {
    this.spec(p.target);
    this.checkId(p.id);
    return this.jobs.start({ kind: 'restore', target: p.target, volume: p.volume }, async (ctx) => {
      const repo = await this.repo(p.target);
      const m = await repo.getManifest(p.id);
      if (!m) throw backupNotFound(p.target, p.id);
      const info = await this.o.registry.createVolume({ name: p.volume, size: m.size, chunkSize: m.chunkSize });
      // A crash from here on leaves a half-made volume: the marker gets it removed at the next start.
      const marker = partialFile(this.o.store.dataDir, p.volume);
      try {
        await writeFileAtomic(marker, JSON.stringify({ volume: p.volume, volumeCreated: info.created, target: p.target, id: p.id } satisfies PartialRestore))
          .catch((e: unknown) => log.warn(`restore of ${p.id}: cannot write ${marker} (a crash now would leave the half-made volume '${p.volume}')`, e));
        const r = await restoreInto({ repo, manifest: m, device: this.o.store.head(p.volume), signal: ctx.signal, progress: ctx.progress }, p.volume);
        await removeStateFile(marker);
        return r;
      } catch (e) {
        if (this.closing) throw e; // the marker stays: the volume goes at the next start
        await this.o.registry.deleteVolume(p.volume, true).catch((d: unknown) => log.warn(`restore of ${p.id}: cannot remove the partial volume '${p.volume}'`, d));
        await removeStateFile(marker).catch(() => undefined);
        throw restoreFailure(e, p.volume);
      }
    });
  }

  /** Removes the half-made volumes of plain restores that a crash or shutdown interrupted. */
  private removePartialRestores(): void {
    for (const file of listRestoreFiles(this.o.store.dataDir, true)) {
      let pr: PartialRestore;
      try {
        pr = decodePartialRestore(readStateFile(file) ?? '', file);
      } catch (e) {
        log.error(`restore: cannot read ${file} (${(e as Error).message})`);
        continue;
      }
      if (this.localVolumeIs(pr.volume, pr.volumeCreated)) {
        log.warn(`restore of backup ${pr.id} into '${pr.volume}' was interrupted; removing the half-restored volume (run the restore again)`);
        this.o.registry.deleteVolume(pr.volume, true)
          .then(() => removeStateFile(file))
          .catch((e: unknown) => log.error(`restore: cannot remove the half-restored volume '${pr.volume}'`, e));
      } else {
        removeStateFile(file).catch(() => undefined);
      }
    }
  }

  verify(p: { target: string; id?: string; samplePct: number }): JobView {
    this.spec(p.target);
    if (p.id !== undefined) this.checkId(p.id);
    return this.jobs.start({ kind: 'verify', target: p.target }, async (ctx) => {
      const repo = await this.repo(p.target);
      if (p.id !== undefined && (await repo.getManifest(p.id).catch(() => true)) === null) {
        throw backupNotFound(p.target, p.id);
      }
      return verifyTarget(repo, { ...(p.id !== undefined ? { id: p.id } : {}), samplePct: p.samplePct, signal: ctx.signal, progress: ctx.progress });
    });
  }

  /** Removes the manifest; its blocks go at the next prune (or gc) when nothing else names them. */
  async delete(p: { target: string; id: string }): Promise<{ id: string; deleted: true }> {
    this.checkId(p.id);
    const repo = await this.repo(p.target);
    const m = await repo.getManifest(p.id);
    if (!m) throw backupNotFound(p.target, p.id);
    this.deleting.add(p.id);
    try {
      await repo.deleteManifest(p.id);
    } finally {
      this.deleting.delete(p.id);
    }
    this.forgetSnapshotState(m.volume, m.snapshot);
    return { id: p.id, deleted: true };
  }

  async prune(p: { target: string; volume: string; policy: RetentionPolicy; dryRun: boolean; graceMs?: number }): Promise<{ kept: string[]; deleted: string[]; dryRun: boolean; gc: GcResult }> {
    const repo = await this.repo(p.target);
    const mine: { id: string; created: string; snapshot: string }[] = [];
    for (const id of await repo.manifestIds()) {
      const m = await repo.getManifest(id);
      if (m && m.volume === p.volume) mine.push({ id, created: m.created, snapshot: m.snapshot });
    }
    const keep = selectKept(mine, p.policy);
    const drop = mine.filter((b) => !keep.has(b.id));
    if (!p.dryRun) {
      for (const b of drop) {
        await repo.deleteManifest(b.id);
        this.forgetSnapshotState(p.volume, b.snapshot);
      }
    }
    const gc = await collectGarbage(repo, { graceMs: p.graceMs ?? GC_GRACE_MS_DEFAULT, dryRun: p.dryRun, source: this.source });
    return { kept: mine.filter((b) => keep.has(b.id)).map((b) => b.id).sort(), deleted: drop.map((b) => b.id).sort(), dryRun: p.dryRun, gc };
  }

  async close(): Promise<void> {
    this.instant.closeSoon();
    this.closing = true;
    await this.jobs.cancelAll();
    await this.results.save(); // the jobs as they ended
    for (const p of this.repos.values()) (await p.catch(() => null))?.store.close();
  }

  private checkId(id: string): void {
    if (!BACKUP_ID_PATTERN.test(id)) throw new BackupError(BackupErrorCode.BackupNotFound, `'${id}' is not a backup id (e.g. 20261130T080000123Z-0a1b2c3d)`);
  }

  private localVolumeIs(volume: string, created: string): boolean {
    try {
      return this.o.store.volumeInfo(volume).created === created;
    } catch {
      return false;
    }
  }

  private localSnapshotIs(volume: string, snapshot: string, created: string): boolean {
    try {
      return this.o.store.snapshotInfo(volume, snapshot).created === created;
    } catch {
      return false;
    }
  }

  /** Jobs and failed backup states of the previous run (saved-results.ts). */
  private loadResults(): void {
    const r = this.results.load();
    if (!r) return;
    this.jobs.adopt(r.jobs, r.savedAt);
    for (const s of r.snapshots) {
      const at = s.key.indexOf('@');
      if (at > 0 && this.localSnapshotIs(s.key.slice(0, at), s.key.slice(at + 1), s.created)) this.snapState.set(s.key, s.state);
    }
    // A backup that was running when the server stopped failed.
    for (const j of this.jobs.list()) {
      if (j.kind === 'backup' && j.error?.code === INTERRUPTED && j.volume !== null && j.snapshot !== null) {
        const key = exportNameOf(j.volume, j.snapshot);
        if (!this.snapState.has(key) && this.localSnapshotExists(j.volume, j.snapshot)) this.snapState.set(key, `failed: ${j.error.message}`);
      }
    }
  }

  private resultsNow(): { jobs: JobView[]; snapshots: SavedSnapshotState[] } {
    const snapshots: SavedSnapshotState[] = [];
    for (const [key, state] of this.snapState) {
      if (!state.startsWith('failed')) continue;
      const at = key.indexOf('@');
      try {
        snapshots.push({ key, state, created: this.o.store.snapshotInfo(key.slice(0, at), key.slice(at + 1)).created });
      } catch {
        // the snapshot is gone: its state with it
      }
    }
    return { jobs: this.jobs.list(), snapshots };
  }

  private localSnapshotExists(volume: string, snapshot: string): boolean {
    try {
      this.o.store.snapshotInfo(volume, snapshot);
      return true;
    } catch {
      return false;
    }
  }

  private forgetSnapshotState(volume: string, snapshot: string): void {
    const key = exportNameOf(volume, snapshot);
    if (this.snapState.get(key) === 'backed-up') this.snapState.delete(key);
  }
}
