// The control methods: each one a params schema and a handler over the volume registry. The
// table is the whole API; protocol/control.md documents every entry and a test replays its
// examples.
import { isAbsolute } from 'node:path';
import { checkChunkSize, checkVolumeSize, StoreError, StoreErrorCode } from '../storage/types.ts';
import type { VolumeRegistry } from '../volumes/registry.ts';
import type { DiffResult } from '../volumes/views.ts';
import type { BackupManager } from '../backup/manager.ts';
import type { SpaceHistory, VolumeHistory } from '../volumes/space-history.ts';
import { BACKUP_METHODS } from './backup-methods.ts';
import type { Scheduler } from '../schedule/scheduler.ts';
import { SCHEDULE_METHODS } from './schedule-methods.ts';
import { invalidParams } from './errors.ts';
import { checkHealth, type HealthReport, type HealthSources } from './health.ts';
import { validateParams, type Params, type ParamsSchema } from './validate.ts';
import { LoopDelayMonitor, LOOP_DELAY_WINDOW_MAX_SECONDS } from '../util/loop-delay.ts';

/** Extents per snapshot.diff page unless `limit` says otherwise, and the most it may say. */
export const DIFF_PAGE_DEFAULT = 1024;
export const DIFF_PAGE_MAX = 65536;
/** Entries per volume.list/snapshot.list page unless `limit` says otherwise, and the most it may say. */
export const LIST_PAGE_DEFAULT = 1000;
export const LIST_PAGE_MAX = 10000;
/** Longest snapshot description, characters. */
export const DESCRIPTION_MAX = 1024;
/** Longest backing path, characters. */
export const PATH_MAX = 4096;

/** server.stats' `eventLoop`: the worst of the window each call asks for (`eventLoopSeconds`). */
const loopDelay = new LoopDelayMonitor();

export interface ServerInfo {
  version: string;
  listeners: string[];
  startedAt: Date;
  /** Live NBD connections: peer, TLS identity names, TLS version (null: clear), export. */
  connections?: { peer: string; identity: string[]; tls: string | null; export: string | null }[];
}

export interface ControlContext {
  registry: VolumeRegistry;
  /** Backup targets and jobs (absent: the backup methods say there are no targets). */
  backups?: BackupManager;
  /** Snapshot schedules (absent: the schedule methods answer NOT_SUPPORTED). */
  schedules?: Scheduler;
  serverInfo(): ServerInfo;
  /** What server.health checks; without it (a server that never set it up) it answers degraded. */
  health?: HealthSources;
  /** Space used over time per volume (absent: volume.history answers no samples). */
  history?: SpaceHistory;
}

interface MethodDef<S extends ParamsSchema, R = unknown> {
  params: S;
  run(p: Params<S>, ctx: ControlContext): R;
}

function def<S extends ParamsSchema, R>(params: S, run: (p: Params<S>, ctx: ControlContext) => R): MethodDef<S, R> {
  return { params, run };
}

const name = { type: 'string', required: true } as const;
const optBool = { type: 'boolean', required: false } as const;
/** Paging of volume.list and snapshot.list: `after` is the last name of the previous page. */
const after = { type: 'string', required: false } as const;
const limit = { type: 'integer', required: false, min: 1, max: LIST_PAGE_MAX } as const;

export const METHODS = {
  'server.info': def({}, (_p, ctx) => {
    const info = ctx.serverInfo();
    return {
      version: info.version,
      listeners: info.listeners,
      startedAt: info.startedAt.toISOString(),
      uptimeSeconds: Math.floor((Date.now() - info.startedAt.getTime()) / 1000),
      pid: process.pid,
      defaultExport: ctx.registry.defaultExport,
      readOnly: ctx.registry.readOnly,
    };
  }),

  'server.stats': def({ eventLoopSeconds: { type: 'integer', required: false, min: 1, max: LOOP_DELAY_WINDOW_MAX_SECONDS } }, async (p, ctx) => ({
    ...await ctx.registry.statsSliced(), connections: ctx.serverInfo().connections ?? [], eventLoop: loopDelay.read(p.eventLoopSeconds),
  })),

  'server.health': def({ minFreePercent: { type: 'integer', required: false, min: 0, max: 100 } }, async (p, ctx): Promise<HealthReport> => {
    if (!ctx.health) return { status: 'degraded', checks: [] };
    return checkHealth(ctx.health, p.minFreePercent);
  }),

  'volume.create': def({
    name,
    size: { type: 'integer', required: false, min: 1 },
    backing: { type: 'string', required: false, maxLength: PATH_MAX },
    chunkSize: { type: 'integer', required: false, min: 1 },
  }, (p, ctx) => {
    if (p.size === undefined && p.backing === undefined) {
      throw invalidParams('volume.create: "size" is required unless "backing" is given', 'size');
    }
    if (p.size !== undefined) checkVolumeSize(p.size);
    if (p.chunkSize !== undefined) checkChunkSize(p.chunkSize);
    if (p.backing !== undefined && !isAbsolute(p.backing)) {
      throw new StoreError(StoreErrorCode.InvalidArgument, `backing '${p.backing}' must be an absolute path`);
    }
    return ctx.registry.createVolume({
      name: p.name,
      ...(p.size !== undefined ? { size: p.size } : {}),
      ...(p.backing !== undefined ? { backing: p.backing } : {}),
      ...(p.chunkSize !== undefined ? { chunkSize: p.chunkSize } : {}),
    });
  }),

  'volume.list': def({ after, limit }, (p, ctx) =>
    ctx.registry.volumePageSliced({ after: p.after, limit: p.limit ?? LIST_PAGE_DEFAULT })),

  'volume.info': def({ name }, (p, ctx) => ctx.registry.volumeInfo(p.name)),

  'volume.history': def({ name }, (p, ctx): VolumeHistory => {
    ctx.registry.volumeInfo(p.name); // VOLUME_NOT_FOUND
    return ctx.history?.history(p.name) ?? { volume: p.name, intervalSeconds: null, samples: [] };
  }),

  'volume.delete': def({ name, force: optBool, withSnapshots: optBool }, async (p, ctx) => {
    const r = await ctx.registry.deleteVolume(p.name, p.force ?? false, p.withSnapshots ?? false);
    await ctx.schedules?.removeVolume(p.name); // its schedules go with it
    return { name: p.name, deleted: true, disconnected: r.disconnected, snapshots: r.snapshots, clones: r.clones };
  }),

  'volume.acceptBacking': def({ name }, (p, ctx) => ctx.registry.acceptBacking(p.name)),

  'volume.resize': def({ name, size: { type: 'integer', required: true, min: 1 }, shrink: optBool }, (p, ctx) => {
    checkVolumeSize(p.size);
    return ctx.registry.resizeVolume(p.name, p.size, p.shrink ?? false);
  }),

  'volume.clone': def({ volume: name, snapshot: name, name }, (p, ctx) =>
    ctx.registry.clone(p.volume, p.snapshot, p.name)),

  'snapshot.create': def({
    volume: name,
    name: { type: 'string', required: false },
    description: { type: 'string', required: false, maxLength: DESCRIPTION_MAX },
  }, (p, ctx) => ctx.registry.createSnapshot(p.volume, p.name, p.description)),

  'snapshot.list': def({ volume: name, after, limit }, async (p, ctx) => {
    const page = await ctx.registry.snapshotPageSliced(p.volume, { after: p.after, limit: p.limit ?? LIST_PAGE_DEFAULT });
    return { volume: p.volume, snapshots: page.snapshots, next: page.next };
  }),

  'snapshot.info': def({ volume: name, name }, (p, ctx) => ctx.registry.snapshotInfo(p.volume, p.name)),

  'snapshot.delete': def({ volume: name, name }, async (p, ctx) => {
    await ctx.registry.deleteSnapshot(p.volume, p.name);
    return { volume: p.volume, name: p.name, deleted: true };
  }),

  'snapshot.rollback': def({ volume: name, name, force: optBool }, async (p, ctx) => {
    const r = await ctx.registry.rollback(p.volume, p.name, p.force ?? false);
    return { volume: p.volume, snapshot: p.name, disconnected: r.disconnected };
  }),

  'snapshot.diff': def({
    volume: name,
    from: name,
    to: { type: 'string', required: false },
    cursor: { type: 'string', required: false, maxLength: 32 },
    limit: { type: 'integer', required: false, min: 1, max: DIFF_PAGE_MAX },
  }, async (p, ctx): Promise<DiffResult> => {
    let start = 0;
    if (p.cursor !== undefined) {
      // The cursor is opaque to clients; today it is the byte offset to continue from.
      if (!/^\d{1,16}$/.test(p.cursor) || !Number.isSafeInteger(Number(p.cursor))) {
        throw invalidParams('snapshot.diff: "cursor" is not one this server handed out', 'cursor');
      }
      start = Number(p.cursor);
    }
    const to = p.to ?? null;
    const page = await ctx.registry.diff(p.volume, p.from, to, { start, limit: p.limit ?? DIFF_PAGE_DEFAULT });
    return {
      volume: p.volume, from: p.from, to,
      extents: page.extents.map((e) => ({ offset: e.offset, length: e.length })),
      next: page.next === null ? null : String(page.next),
    };
  }),

  ...BACKUP_METHODS,
  ...SCHEDULE_METHODS,
} as const;

export type MethodName = keyof typeof METHODS;
/** What a method takes and answers: the CLI (src/cli/control-commands.ts) calls with these types. */
export type MethodParams<M extends MethodName> = Params<(typeof METHODS)[M]['params']>;
export type MethodResult<M extends MethodName> = Awaited<ReturnType<(typeof METHODS)[M]['run']>>;

export function isMethodName(m: string): m is MethodName {
  return Object.hasOwn(METHODS, m);
}

/** Validates params and runs the method; throws RpcError/StoreError for the caller to map. */
export async function callMethod(method: MethodName, params: Record<string, unknown>, ctx: ControlContext): Promise<unknown> {
  const m = METHODS[method] as MethodDef<ParamsSchema>;
  const p = validateParams(method, m.params, params);
  return await m.run(p, ctx);
}
