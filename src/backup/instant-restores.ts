// The instant restores of one server: starting one (the volume is created, its fill source
// attached and its progress file written before the command answers), resuming those a restart
// interrupted (read synchronously at startup, so the fill hook is in place before any NBD client
// can read), and ending them: complete (hook removed, progress file deleted), cancelled by a
// user (the half-filled volume is deleted), or stopped by the server's shutdown (kept, resumed
// at the next start).
import type { Store } from '../storage/types.ts';
import { log } from '../util/log.ts';
import type { VolumeRegistry } from '../volumes/registry.ts';
import { backupNotFound } from './errors.ts';
import { InstantRestore } from './instant-restore.ts';
import type { JobTable, JobView } from './jobs.ts';
import type { Manifest } from './manifest.ts';
import type { Repository } from './repository.ts';
import { decodeRestoreProgress, listRestoreFiles, readStateFile, RESTORE_FORMAT, removeStateFile, type RestoreProgress } from './state-files.ts';

export interface InstantRestoresOptions {
  store: Store;
  registry: VolumeRegistry;
  jobs: JobTable;
  repo: (target: string) => Promise<Repository>;
}

export class InstantRestores {
  private readonly o: InstantRestoresOptions;
  private readonly byVolume = new Map<string, { ir: InstantRestore; job: string }>();
  private closing = false;

  constructor(o: InstantRestoresOptions) {
    this.o = o;
  }

  /** `restoring 37%` for volume views, or null when the volume is not being restored. */
  stateOf(volume: string): { percent: number; stalled: string | null; job: string; backup: string; target: string } | null {
    const r = this.byVolume.get(volume);
    return r ? { percent: r.ir.percent, stalled: r.ir.stalled, job: r.job, backup: r.ir.id, target: r.ir.target } : null;
  }

  async start(target: string, manifest: Manifest, volume: string): Promise<JobView> {
    const info = await this.o.registry.createVolume({ name: volume, size: manifest.size, chunkSize: manifest.chunkSize });
    const progress: RestoreProgress = {
      format: RESTORE_FORMAT, target, id: manifest.id, volume, volumeCreated: info.created,
      blockSize: manifest.blockSize, blocks: manifest.blocks.length, done: new Uint8Array(Math.ceil(manifest.blocks.length / 8)),
    };
    const ir = this.attach(progress, manifest);
    try {
      await ir.persist(); // resumable from now on
    } catch (e) {
      this.o.store.attachFill(volume, null);
      await this.o.registry.deleteVolume(volume, true).catch((d: unknown) => log.warn(`instant restore: cannot remove the volume '${volume}'`, d));
      throw e;
    }
    return this.run(ir);
  }

  /** Resumes the restores a restart interrupted. Synchronous up to the jobs' start. */
  resume(): void {
    for (const file of listRestoreFiles(this.o.store.dataDir)) {
      let p: RestoreProgress;
      try {
        p = decodeRestoreProgress(readStateFile(file) ?? '', file);
      } catch (e) {
        log.error(`instant restore: cannot read ${file} (${(e as Error).message}); the restore it records is not resumed`);
        continue;
      }
      if (!this.volumeIs(p.volume, p.volumeCreated)) {
        log.warn(`instant restore: volume '${p.volume}' of ${file} no longer exists; forgetting that restore`);
        removeStateFile(file).catch(() => undefined);
        continue;
      }
      const ir = this.attach(p, null);
      log.info(`instant restore of backup ${p.id} into '${p.volume}' resumed at ${ir.percent}%`);
      this.run(ir);
    }
  }

  /** Stops the background work (the server is shutting down): the restores resume at the next start. */
  closeSoon(): void {
    this.closing = true;
  }

  private attach(p: RestoreProgress, manifest: Manifest | null): InstantRestore {
    const store = this.o.store;
    const ir = new InstantRestore({
      dataDir: store.dataDir, progress: p, manifest, device: store.attachFill(p.volume, null),
      load: async () => {
        const repo = await this.o.repo(p.target);
        const m = await repo.getManifest(p.id);
        if (!m) throw backupNotFound(p.target, p.id);
        return { repo, manifest: m };
      },
      volumeGone: () => !this.volumeIs(p.volume, p.volumeCreated),
    });
    store.attachFill(p.volume, ir);
    return ir;
  }

  private run(ir: InstantRestore): JobView {
    const volume = ir.volume;
    const job = this.o.jobs.start({ kind: 'restore', target: ir.target, volume }, async (ctx) => {
      try {
        const r = await ir.run(ctx.signal, ctx.progress);
        this.o.store.attachFill(volume, null);
        await ir.removeFile();
        log.info(`instant restore of backup ${ir.id} into '${volume}' is complete`);
        return r;
      } catch (e) {
        if (this.closing) throw e; // the progress file stays: resumed at the next start
        if (this.volumeIs(volume, ir.volumeCreated)) {
          this.o.store.attachFill(volume, null);
          await this.o.registry.deleteVolume(volume, true).catch((d: unknown) => log.warn(`instant restore: cannot remove the half-restored volume '${volume}'`, d));
        }
        await ir.removeFile();
        throw e;
      } finally {
        this.byVolume.delete(volume);
      }
    });
    this.byVolume.set(volume, { ir, job: job.id });
    return job;
  }

  private volumeIs(volume: string, created: string): boolean {
    try {
      return this.o.store.volumeInfo(volume).created === created;
    } catch {
      return false;
    }
  }
}
