// The control methods of snapshot schedules (protocol/control.md, "Schedules"): each one a params
// schema and a handler over the scheduler. A bad `at`, `every` or `tz` is INVALID_PARAMS naming
// the param; an unknown schedule is SCHEDULE_NOT_FOUND.
import { ScheduleSpecError, SCHEDULE_KINDS } from '../schedule/calendar.ts';
import { ScheduleError, SCHEDULE_KEEP_MAX, type Scheduler } from '../schedule/scheduler.ts';
import { checkName } from '../storage/types.ts';
import { invalidParams, RpcCode, RpcError } from './errors.ts';
import type { Params, ParamsSchema } from './validate.ts';

/** Longest `at`, `every`, `tz` and target name a schedule takes, characters. */
export const SCHEDULE_FIELD_MAX = 64;

interface ScheduleContext {
  schedules?: Scheduler;
}

interface MethodDef<S extends ParamsSchema> {
  params: S;
  run(p: Params<S>, ctx: ScheduleContext): unknown;
}

function method<S extends ParamsSchema>(params: S, run: (p: Params<S>, sch: Scheduler) => unknown): MethodDef<S> {
  return {
    params,
    run: async (p, ctx) => {
      if (!ctx.schedules) throw new RpcError(RpcCode.ApplicationError, 'NOT_SUPPORTED', 'this server runs no scheduler');
      try {
        return await run(p, ctx.schedules);
      } catch (e) {
        if (e instanceof ScheduleSpecError) throw invalidParams(`schedule.add: ${e.message}`, e.param);
        if (e instanceof ScheduleError) throw new RpcError(RpcCode.ApplicationError, e.code, e.message);
        throw e;
      }
    },
  };
}

const field = { type: 'string', required: false, maxLength: SCHEDULE_FIELD_MAX } as const;
const keep = { type: 'integer', required: true, min: 1, max: SCHEDULE_KEEP_MAX } as const;

export const SCHEDULE_METHODS = {
  'schedule.add': method({
    volume: { type: 'string', required: true },
    kind: { type: 'string', required: true, maxLength: SCHEDULE_FIELD_MAX },
    at: field, every: field, tz: field,
    keep,
    backupTo: field,
    keepBackups: { ...keep, required: false },
  }, (p, sch) => {
    checkName('volume', p.volume);
    if (!(SCHEDULE_KINDS as readonly string[]).includes(p.kind)) {
      throw invalidParams(`schedule.add: "kind" must be one of ${SCHEDULE_KINDS.join(', ')}`, 'kind');
    }
    if (p.keepBackups !== undefined && p.backupTo === undefined) throw invalidParams('schedule.add: "keepBackups" needs "backupTo"', 'keepBackups');
    return sch.add({
      volume: p.volume, kind: p.kind, keep: p.keep,
      ...(p.at !== undefined ? { at: p.at } : {}),
      ...(p.every !== undefined ? { every: p.every } : {}),
      ...(p.tz !== undefined ? { tz: p.tz } : {}),
      ...(p.backupTo !== undefined ? { backupTo: p.backupTo } : {}),
      ...(p.keepBackups !== undefined ? { keepBackups: p.keepBackups } : {}),
    });
  }),

  'schedule.list': method({ volume: { type: 'string', required: false } }, (p, sch) => ({ schedules: sch.list(p.volume) })),

  'schedule.remove': method({ id: { type: 'string', required: true, maxLength: SCHEDULE_FIELD_MAX } }, async (p, sch) => {
    await sch.remove(p.id);
    return { removed: p.id };
  }),
} as const;
