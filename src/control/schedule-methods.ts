// The control methods of snapshot schedules (protocol/control.md, "Schedules"): each one a params
// schema and a handler over the scheduler. A bad `at`, `every` or `tz` is INVALID_PARAMS naming
// the param; an unknown schedule is SCHEDULE_NOT_FOUND.
import { ScheduleSpecError, SCHEDULE_KINDS } from '../schedule/calendar.ts';
import { SCHEDULE_KEEP_MAX, type Scheduler } from '../schedule/scheduler.ts';
import { checkName } from '../storage/types.ts';
import { ControlErrorCode, invalidParams, RpcCode, RpcError } from './errors.ts';
import { serviceMethod } from './service-method.ts';

/** Longest `at`, `every`, `tz` and target name a schedule takes, characters. */
export const SCHEDULE_FIELD_MAX = 64;

interface ScheduleContext {
  schedules?: Scheduler;
}

const method = serviceMethod((ctx: ScheduleContext) => ctx.schedules,
  () => new RpcError(RpcCode.ApplicationError, ControlErrorCode.NotSupported, 'this server runs no scheduler'));

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
  }, async (p, sch) => {
    checkName('volume', p.volume);
    if (!(SCHEDULE_KINDS as readonly string[]).includes(p.kind)) {
      throw invalidParams(`schedule.add: "kind" must be one of ${SCHEDULE_KINDS.join(', ')}`, 'kind');
    }
    if (p.keepBackups !== undefined && p.backupTo === undefined) throw invalidParams('schedule.add: "keepBackups" needs "backupTo"', 'keepBackups');
    try {
      return await sch.add({
        volume: p.volume, kind: p.kind, keep: p.keep,
        ...(p.at !== undefined ? { at: p.at } : {}),
        ...(p.every !== undefined ? { every: p.every } : {}),
        ...(p.tz !== undefined ? { tz: p.tz } : {}),
        ...(p.backupTo !== undefined ? { backupTo: p.backupTo } : {}),
        ...(p.keepBackups !== undefined ? { keepBackups: p.keepBackups } : {}),
      });
    } catch (e) {
      // A bad `at`, `every` or `tz` is the caller's params, named.
      if (e instanceof ScheduleSpecError) throw invalidParams(`schedule.add: ${e.message}`, e.param);
      throw e;
    }
  }),

  'schedule.list': method({ volume: { type: 'string', required: false } }, (p, sch) => ({ schedules: sch.list(p.volume) })),

  'schedule.remove': method({ id: { type: 'string', required: true, maxLength: SCHEDULE_FIELD_MAX } }, async (p, sch) => {
    await sch.remove(p.id);
    return { removed: p.id };
  }),
} as const;
