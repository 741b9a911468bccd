// `snapnbd schedule add|list|remove`: a client of the control socket's schedule.* methods.
// Exit codes as for the other control commands (0 ok, 1 refused, 2 usage, 3 unreachable).
import type { ControlClient } from '../control/client.ts';
import type { Schedule } from '../schedule/schedule-file.ts';
import { commandPrologue, usageFailure } from './command-line.ts';
import { CONTROL_CLI_OPTIONS, controlSocketPath, withControlClient } from './control-session.ts';
import { resultPrinter, table } from './output.ts';
import { UsageError } from './usage.ts';

export const SCHEDULE_USAGE = `Usage:
  snapnbd schedule add VOLUME (--hourly :MM | --daily HH:MM | --weekly DAY,HH:MM |
                      --monthly DAY,HH:MM | --every DURATION) [--tz ZONE] --keep N
                      [--backup-to TARGET [--keep-backups N]]
  snapnbd schedule list [VOLUME]
  snapnbd schedule remove ID

Each run takes a snapshot named auto-ID-YYYYMMDDTHHMMSSZ (UTC) and deletes that schedule's oldest
snapshots beyond --keep (never another's, never a manual one; one that is exported, cloned or being
backed up is kept and reported). --every takes 1s and up (30s, 10m, 2h, 1d). --tz is an IANA
zone (default UTC); a daily run at a time that daylight saving skips runs after the gap, one
that happens twice runs once. DAY is sun..sat (weekly) or 1..31 (monthly; past the month's end:
its last day). --backup-to backs each snapshot up to a target of the server's and deletes this
schedule's backups beyond --keep-backups (default --keep; their blocks go at the next backup prune).
Common options: --control PATH, --data-dir DIR, --json, -h/--help.
`;

const KINDS = ['hourly', 'daily', 'weekly', 'monthly', 'every'] as const;

function count(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v) || Number(v) < 1) throw new UsageError(`--${flag}: '${v}' is not a whole number from 1`);
  return Number(v);
}

/** "daily 02:00 Europe/Paris" */
export function whenOf(s: Pick<Schedule, 'kind' | 'at' | 'every' | 'tz'>): string {
  return s.kind === 'every' ? `every ${s.every}` : `${s.kind} ${s.at} ${s.tz}`;
}

function lastOf(s: Schedule): string {
  if (!s.lastResult) return '-';
  const r = s.lastResult;
  const skipped = r.skipped?.length ? ` (kept ${r.skipped.map((k) => `${k.name}: ${k.reason}`).join('; ')})` : '';
  return `${s.lastRun} ${r.ok ? `ok ${r.snapshot ?? ''}` : `FAILED: ${r.error ?? ''}`}${skipped}`;
}

/** The schedules table `schedule list` and `volume info` print. */
export function scheduleTable(list: Schedule[]): string {
  return table(['ID', 'VOLUME', 'WHEN', 'KEEP', 'BACKUP', 'NEXT', 'LAST'],
    list.map((s) => [s.id, s.volume, whenOf(s), String(s.keep),
      s.backupTo === undefined ? '-' : `${s.backupTo} keep ${s.keepBackups}`, s.nextRun, lastOf(s)]));
}

export async function runScheduleCli(argv: string[]): Promise<number> {
  const parsed = commandPrologue(argv, {
    allowPositionals: true,
    options: {
      ...CONTROL_CLI_OPTIONS,
      hourly: { type: 'string' }, daily: { type: 'string' }, weekly: { type: 'string' }, monthly: { type: 'string' }, every: { type: 'string' },
      tz: { type: 'string' }, keep: { type: 'string' }, 'backup-to': { type: 'string' }, 'keep-backups': { type: 'string' },
    },
  }, SCHEDULE_USAGE, usage);
  if (typeof parsed === 'number') return parsed;
  const v = parsed.values;
  const [verb, ...args] = parsed.positionals;
  const json = v.json ?? false;
  const print = resultPrinter(json);
  let call: (c: ControlClient) => Promise<void>;
  try {
    const addOnly = ['hourly', 'daily', 'weekly', 'monthly', 'every', 'tz', 'keep', 'backup-to', 'keep-backups'] as const;
    if (verb !== 'add') for (const o of addOnly) if (v[o] !== undefined) throw new UsageError(`schedule ${verb ?? ''}: --${o} applies to schedule add only`);
    switch (verb) {
      case 'add': {
        if (args.length !== 1) throw new UsageError('schedule add: expected VOLUME');
        const given = KINDS.filter((k) => v[k] !== undefined);
        if (given.length !== 1) throw new UsageError('schedule add: give one of --hourly, --daily, --weekly, --monthly, --every');
        const kind = given[0]!;
        const keep = count(v.keep, 'keep');
        if (keep === undefined) throw new UsageError('schedule add: --keep N is required');
        const keepBackups = count(v['keep-backups'], 'keep-backups');
        if (keepBackups !== undefined && v['backup-to'] === undefined) throw new UsageError('schedule add: --keep-backups needs --backup-to');
        const params = {
          volume: args[0]!, kind, keep,
          ...(kind === 'every' ? { every: v.every! } : { at: v[kind]! }),
          ...(v.tz !== undefined ? { tz: v.tz } : {}),
          ...(v['backup-to'] !== undefined ? { backupTo: v['backup-to'] } : {}),
          ...(keepBackups !== undefined ? { keepBackups } : {}),
        };
        call = async (c) => {
          const s = await c.call<Schedule>('schedule.add', params);
          print(s, () => `added schedule ${s.id}: ${s.volume} ${whenOf(s)}, keep ${s.keep}`
            + (s.backupTo !== undefined ? `, backup to ${s.backupTo} keep ${s.keepBackups}` : '') + `; next run ${s.nextRun}\n`);
        };
        break;
      }
      case 'list': {
        if (args.length > 1) throw new UsageError('schedule list: expected [VOLUME]');
        call = async (c) => {
          const r = await c.call<{ schedules: Schedule[] }>('schedule.list', args[0] !== undefined ? { volume: args[0] } : {});
          print(r, () => (r.schedules.length ? scheduleTable(r.schedules) : 'no schedules\n'));
        };
        break;
      }
      case 'remove': {
        if (args.length !== 1) throw new UsageError('schedule remove: expected ID');
        call = async (c) => {
          const r = await c.call<{ removed: string }>('schedule.remove', { id: args[0]! });
          print(r, () => `removed schedule ${r.removed} (its snapshots are kept)\n`);
        };
        break;
      }
      default:
        throw new UsageError(verb === undefined ? 'schedule: missing subcommand (add, list, remove)' : `schedule: unknown subcommand '${verb}'`);
    }
  } catch (e) {
    if (e instanceof UsageError) return usage(e.message);
    throw e;
  }
  return withControlClient(controlSocketPath({ control: v.control, dataDir: v['data-dir'] }), call, { help: SCHEDULE_HELP });
}

const SCHEDULE_HELP = 'snapnbd schedule --help';

function usage(message: string): number {
  return usageFailure(message, SCHEDULE_HELP);
}
