// What `/metrics` reports, gathered at scrape time from the parts that own the figures: per export
// (the sessions' RequestMetrics and the registry's connection counts), per volume and per store
// (the registry's stats, gathered in slices like server.stats, and volumeInfo), the store's commits and
// compaction passes (StoreActivity, told by the engine), timed operations, the process. Names
// follow Prometheus' conventions: a snapnbd_ prefix, base units in the name, _total counters.
import { statfs } from 'node:fs/promises';
import { COMMAND_LABELS, type RequestMetrics } from '../server/request-metrics.ts';
import type { StoreObserver } from '../storage/index.ts';
import { Histogram, LATENCY_BUCKETS_SECONDS } from '../util/histogram.ts';
import type { OperationMetrics } from '../util/operation-metrics.ts';
import type { VolumeRegistry } from '../volumes/registry.ts';
import type { SchedulerStats } from '../schedule/scheduler.ts';
import type { MetricFamily } from './prom-text.ts';
import { ProcessMetrics } from './process-metrics.ts';

/** Commits and compaction passes, as the engine reports them. */
export class StoreActivity implements StoreObserver {
  readonly commitDuration = new Histogram(LATENCY_BUCKETS_SECONDS);
  compactionPasses = 0;
  compactionBytesMoved = 0;

  commit(seconds: number): void {
    this.commitDuration.observe(seconds);
  }

  compactionPass(bytesMoved: number): void {
    this.compactionPasses++;
    this.compactionBytesMoved += bytesMoved;
  }
}

export interface MetricsSources {
  registry: VolumeRegistry;
  requests: RequestMetrics;
  operations: OperationMetrics;
  store: StoreActivity;
  connections: () => { accepted: number; refused: number };
  dataDir: string;
  build: { version: string; commit: string };
  /** Snapshot schedules' runs and retention (src/schedule/scheduler.ts). */
  schedules?: { stats(): SchedulerStats };
}

type Sample = { labels: Record<string, string>; value: number };

function family(name: string, type: 'counter' | 'gauge', help: string, samples: Sample[]): MetricFamily {
  return { name, type, help, samples };
}

export class MetricsCollector {
  private readonly src: MetricsSources;
  private readonly proc = new ProcessMetrics();

  constructor(src: MetricsSources) {
    this.src = src;
  }

  stop(): void {
    this.proc.stop();
  }

  async collect(): Promise<MetricFamily[]> {
    const { registry, requests, operations, store } = this.src;
    const stats = await registry.statsSliced(); // a store of many files: not one long turn
    requests.retainOnly(new Set(stats.exports.map((e) => e.name)));
    const out: MetricFamily[] = [
      family('snapnbd_build_info', 'gauge', 'Always 1; the version and commit of the running build.', [{ labels: this.src.build, value: 1 }]),
    ];

    // Per export.
    const conns = stats.exports.map((e) => ({ labels: { export: e.name }, value: e.connections }));
    out.push(family('snapnbd_export_connections', 'gauge', 'NBD connections to the export now.', conns));
    const reqs: Sample[] = [];
    const bytes: Sample[] = [];
    const errors: Sample[] = [];
    const inFlight: Sample[] = [];
    const latency: { labels: Record<string, string>; histogram: Histogram }[] = [];
    for (const [name, f] of requests.exports()) {
      inFlight.push({ labels: { export: name }, value: f.inFlight });
      f.commands.forEach((c, i) => {
        if (!c) return;
        const labels = { export: name, command: COMMAND_LABELS[i]! };
        reqs.push({ labels, value: c.requests });
        bytes.push({ labels, value: c.bytes });
        latency.push({ labels, histogram: c.latency });
        for (const [errno, n] of c.errors) errors.push({ labels: { ...labels, errno }, value: n });
      });
    }
    out.push(
      family('snapnbd_export_requests_total', 'counter', 'NBD requests answered, by export and command.', reqs),
      family('snapnbd_export_bytes_total', 'counter', 'Bytes read, written, trimmed or zeroed by successful requests, by export and command.', bytes),
      family('snapnbd_export_errors_total', 'counter', 'NBD requests answered with an error, by export, command and errno.', errors),
      family('snapnbd_export_requests_in_flight', 'gauge', 'NBD requests being processed now.', inFlight),
      { name: 'snapnbd_export_request_duration_seconds', type: 'histogram', help: 'Time from reading an NBD request to queueing its reply, in seconds.', samples: latency },
    );
    const c = this.src.connections();
    out.push(
      family('snapnbd_connections_accepted_total', 'counter', 'NBD connections accepted.', [{ labels: {}, value: c.accepted }]),
      family('snapnbd_connections_refused_total', 'counter', 'NBD connections refused (at --max-connections, or while stopping).', [{ labels: {}, value: c.refused }]),
    );

    // Per volume.
    const perVolume = (pick: (v: (typeof stats.volumes)[number]) => number): Sample[] =>
      stats.volumes.map((v) => ({ labels: { volume: v.name }, value: pick(v) }));
    out.push(
      family('snapnbd_volume_size_bytes', 'gauge', 'Size of the volume as clients see it, in bytes.', perVolume((v) => v.size)),
      family('snapnbd_volume_referenced_bytes', 'gauge', 'Bytes of chunks the volume head maps, shared or not.', perVolume((v) => v.referenced)),
      family('snapnbd_volume_used_bytes', 'gauge', 'Bytes of chunks only the volume head maps (freed by deleting it).', perVolume((v) => v.used)),
      family('snapnbd_volume_written_bytes', 'gauge', 'Bytes written to the volume since its newest snapshot.', perVolume((v) => v.written)),
      family('snapnbd_volume_snapshots', 'gauge', 'Snapshots of the volume.', perVolume((v) => v.snapshots)),
      // The state as `volume list` shows it (ready, unavailable), as a 1 on the state's label.
      family('snapnbd_volume_state', 'gauge', 'The volume\'s state (label state): always 1.',
        stats.volumes.map((v) => ({ labels: { volume: v.name, state: v.state }, value: 1 }))),
    );

    // Per store.
    const one = (value: number): Sample[] => [{ labels: {}, value }];
    out.push(
      family('snapnbd_store_allocated_bytes', 'gauge', 'Bytes the store files occupy on disk.', one(stats.store.allocatedBytes)),
      family('snapnbd_store_live_bytes', 'gauge', 'Bytes of live chunks in the store.', one(stats.store.liveBytes)),
      family('snapnbd_store_filesystem_free_bytes', 'gauge', 'Bytes available to snapnbd on the file system of the data dir.', one(await freeBytes(this.src.dataDir))),
      family('snapnbd_store_volumes', 'gauge', 'Volumes in the store.', one(stats.store.volumes)),
      family('snapnbd_store_snapshots', 'gauge', 'Snapshots in the store.', one(stats.store.snapshots)),
      family('snapnbd_store_commits_total', 'counter', 'Store commits (journal appends or checkpoints) that succeeded.', one(store.commitDuration.count)),
      { name: 'snapnbd_store_commit_duration_seconds', type: 'histogram', help: 'Duration of successful store commits, data syncs included, in seconds.', samples: [{ labels: {}, histogram: store.commitDuration }] },
      family('snapnbd_store_compaction_passes_total', 'counter', 'Compaction passes that moved chunks.', one(store.compactionPasses)),
      family('snapnbd_store_compaction_moved_bytes_total', 'counter', 'Bytes of chunks moved by compaction.', one(store.compactionBytesMoved)),
    );

    // Timed operations (snapshot create/delete; schedule and backup runs).
    const durations: { labels: Record<string, string>; histogram: Histogram }[] = [];
    const failures: Sample[] = [];
    for (const [op, f] of operations.all()) {
      durations.push({ labels: { operation: op }, histogram: f.duration });
      failures.push({ labels: { operation: op }, value: f.failures });
    }
    out.push(
      { name: 'snapnbd_operation_duration_seconds', type: 'histogram', help: 'Duration of snapshot, schedule and backup operations, failed ones included, in seconds.', samples: durations },
      family('snapnbd_operation_failures_total', 'counter', 'Snapshot, schedule and backup operations that failed.', failures),
    );

    const sch = this.src.schedules?.stats();
    if (sch) {
      out.push(
        family('snapnbd_schedules', 'gauge', 'Snapshot schedules configured.', one(sch.schedules)),
        family('snapnbd_schedules_failing', 'gauge', 'Snapshot schedules whose last run failed.', one(sch.failing)),
        family('snapnbd_schedule_runs_total', 'counter', 'Scheduled runs (snapshot, backup, retention) since start, by result.',
          [{ labels: { result: 'ok' }, value: sch.runs.ok }, { labels: { result: 'failed' }, value: sch.runs.failed }]),
        family('snapnbd_schedule_snapshots_deleted_total', 'counter', 'Snapshots deleted by schedule retention.', one(sch.snapshotsDeleted)),
        family('snapnbd_schedule_retention_skipped_total', 'counter', 'Snapshots retention would delete but kept (exported, cloned or being backed up), per run.', one(sch.retentionSkipped)),
        family('snapnbd_schedule_backups_deleted_total', 'counter', 'Backups deleted by schedule retention (keepBackups).', one(sch.backupsDeleted)),
      );
    }

    out.push(...this.proc.families());
    return out;
  }
}

/** Free bytes for an unprivileged user (bavail), or NaN when the file system cannot say. */
async function freeBytes(dir: string): Promise<number> {
  try {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  } catch {
    return NaN;
  }
}
