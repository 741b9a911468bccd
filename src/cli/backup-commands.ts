// `snapnbd backup ...`: a client of the control socket's backup.* and job.* methods. create,
// restore and verify start a job; without --detach the command follows it (progress on a
// terminal: bytes, rate, ETA) and prints its result; --detach prints the job and returns.
// Exit codes as for the other control commands (0 ok, 1 refused or failed, 2 usage, 3 unreachable).
import type { ControlClient } from '../control/client.ts';
import { formatSize } from '../util/size.ts';
import { commandPrologue, ExitCode, snapshotArg, usageFailure } from './command-line.ts';
import { CONTROL_CLI_OPTIONS, controlSocketPath, withControlClient } from './control-session.ts';
import { resultPrinter, table } from './output.ts';
import { UsageError } from './usage.ts';

export const BACKUP_USAGE = `Usage:
  snapnbd backup create VOLUME@SNAPSHOT --target NAME [--detach]
  snapnbd backup list [VOLUME] --target NAME
  snapnbd backup restore ID NEWVOLUME --target NAME [--detach | --instant]
  snapnbd backup verify [ID] --target NAME [--sample PCT] [--detach]
  snapnbd backup delete ID --target NAME
  snapnbd backup prune VOLUME --target NAME [--keep-last N] [--keep-daily N] [--keep-weekly N]
                       [--keep-monthly N] [--dry-run] [--grace SECONDS]
  snapnbd backup cancel JOB
  snapnbd backup jobs
  snapnbd backup targets

--instant: returns as soon as NEWVOLUME is usable; blocks not restored yet are fetched when read,
and a background job restores the rest (volume list shows 'restoring N%'; a restart resumes it).
Targets are named by the server (serve --backup-target NAME=URL). Common options: --control PATH,
--data-dir DIR, --json (the method's result as JSON), -h/--help.
`;

/** How often a followed job is polled: a job's end is seen 50 ms late on average (300 ms added
 *  ~150 ms, 5 % of a 512 MiB restore); a job.info call is a few hundred bytes. */
export const JOB_POLL_MS = 100;

interface JobView {
  id: string; kind: string; state: string; bytesDone: number; bytesTotal: number; percent: number;
  bytesPerSecond: number; etaSeconds: number | null; result: unknown; error: { code: string; message: string } | null;
}

function intOpt(v: string | undefined, flag: string, max = 1_000_000): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) > max) throw new UsageError(`--${flag}: '${v}' is not a whole number up to ${max}`);
  return Number(v);
}

async function follow(c: ControlClient, job: JobView, json: boolean): Promise<JobView> {
  const tty = process.stderr.isTTY && !json;
  let j = job;
  while (j.state === 'running') {
    await new Promise((r) => setTimeout(r, JOB_POLL_MS));
    j = await c.call<JobView>('job.info', { id: j.id });
    if (tty) {
      const eta = j.etaSeconds === null ? '?' : `${j.etaSeconds}s`;
      process.stderr.write(`\r${j.kind} ${j.id}: ${j.percent}% ${formatSize(j.bytesDone)}/${formatSize(j.bytesTotal)} ${formatSize(j.bytesPerSecond)}/s ETA ${eta}   `);
    }
  }
  if (tty) process.stderr.write('\n');
  return j;
}

export async function runBackupCli(argv: string[]): Promise<number> {
  const parsed = commandPrologue(argv, {
    allowPositionals: true,
    options: {
      ...CONTROL_CLI_OPTIONS,
      target: { type: 'string' }, detach: { type: 'boolean' }, instant: { type: 'boolean' }, sample: { type: 'string' }, 'dry-run': { type: 'boolean' },
      'keep-last': { type: 'string' }, 'keep-daily': { type: 'string' }, 'keep-weekly': { type: 'string' }, 'keep-monthly': { type: 'string' },
      grace: { type: 'string' },
    },
  }, BACKUP_USAGE, usage);
  if (typeof parsed === 'number') return parsed;
  const v = parsed.values;
  const [verb, ...args] = parsed.positionals;
  const json = v.json ?? false;
  const print = resultPrinter(json);
  let call: (c: ControlClient) => Promise<number>;
  try {
    const need = (n: number, m: number, names: string): void => {
      if (args.length < n || args.length > m) throw new UsageError(`backup ${verb}: expected ${names}`);
    };
    const target = (): string => {
      if (v.target === undefined) throw new UsageError(`backup ${verb}: --target NAME is required`);
      return v.target;
    };
    const runJob = async (c: ControlClient, method: string, params: Record<string, unknown>, human: (r: never) => string,
      failed: (r: never) => boolean = () => false): Promise<number> => {
      const job = await c.call<JobView>(method, params);
      if (v.detach) {
        print(job, () => `started ${job.kind} job ${job.id}\n`);
        return ExitCode.Ok;
      }
      const end = await follow(c, job, json);
      if (end.state !== 'done') {
        process.stderr.write(`snapnbd: ${end.error?.code ?? 'FAILED'}: ${end.error?.message ?? end.state}\n`);
        return ExitCode.ServerError;
      }
      print(end.result, () => human(end.result as never));
      return failed(end.result as never) ? ExitCode.ServerError : ExitCode.Ok;
    };
    switch (verb) {
      case 'create': {
        need(1, 1, 'VOLUME@SNAPSHOT');
        const { volume, snapshot } = snapshotArg(args[0]!, 'backup create');
        const t = target();
        call = (c) => runJob(c, 'backup.create', { target: t, volume, snapshot }, (r: { id: string; bytesUploaded: number; blocksReused: number; bytesRead: number }) =>
          `backed up ${volume}@${snapshot} as ${r.id}: read ${formatSize(r.bytesRead)}, uploaded ${formatSize(r.bytesUploaded)}, ${r.blocksReused} blocks reused\n`);
        break;
      }
      case 'restore': {
        need(2, 2, 'ID NEWVOLUME');
        const t = target();
        if (v.instant) {
          call = async (c) => {
            const job = await c.call<JobView>('backup.restore', { target: t, id: args[0], volume: args[1], instant: true });
            print(job, () => `volume ${args[1]} is usable now; job ${job.id} restores the rest of ${args[0]} in the background\n`);
            return ExitCode.Ok;
          };
          break;
        }
        call = (c) => runJob(c, 'backup.restore', { target: t, id: args[0], volume: args[1] }, (r: { volume: string; bytesWritten: number }) =>
          `restored ${args[0]} to volume ${r.volume} (${formatSize(r.bytesWritten)} written, every block verified)\n`);
        break;
      }
      case 'verify': {
        need(0, 1, '[ID]');
        const t = target();
        const samplePct = intOpt(v.sample, 'sample', 100);
        if (samplePct === 0) throw new UsageError('--sample: give 1 to 100');
        call = (c) => runJob(c, 'backup.verify', { target: t, ...(args[0] ? { id: args[0] } : {}), ...(samplePct ? { samplePct } : {}) },
            (r: { ok: boolean; blocksChecked: number; bad: { object: string; problem: string; backups: string[] }[] }) =>
              r.ok ? `ok: ${r.blocksChecked} blocks checked\n`
                : r.bad.map((b) => `${b.problem}: ${b.object} (backups ${b.backups.join(', ')})\n`).join('') + `${r.bad.length} bad of ${r.blocksChecked} checked\n`,
            (r: { ok: boolean }) => !r.ok);
        break;
      }
      case 'list': {
        need(0, 1, '[VOLUME]');
        const t = target();
        call = async (c) => {
          const r = await c.call<{ backups: { id: string; volume: string; snapshot: string; state: string; created: string; size: number; bytesUploaded: number; blocksReused: number; source: string }[] }>(
            'backup.list', { target: t, ...(args[0] ? { volume: args[0] } : {}) });
          print(r.backups, () => table(['ID', 'VOLUME', 'SNAPSHOT', 'STATE', 'CREATED', 'SIZE', 'UPLOADED', 'REUSED', 'SOURCE'],
            r.backups.map((b) => [b.id, b.volume, b.snapshot, b.state, b.created, formatSize(b.size), formatSize(b.bytesUploaded), String(b.blocksReused), b.source])));
          return ExitCode.Ok;
        };
        break;
      }
      case 'delete': {
        need(1, 1, 'ID');
        const t = target();
        call = async (c) => {
          const r = await c.call('backup.delete', { target: t, id: args[0] });
          print(r, () => `deleted backup ${args[0]} (its blocks go at the next prune)\n`);
          return ExitCode.Ok;
        };
        break;
      }
      case 'prune': {
        need(1, 1, 'VOLUME');
        const t = target();
        const params = {
          target: t, volume: args[0],
          keepLast: intOpt(v['keep-last'], 'keep-last'), keepDaily: intOpt(v['keep-daily'], 'keep-daily'),
          keepWeekly: intOpt(v['keep-weekly'], 'keep-weekly'), keepMonthly: intOpt(v['keep-monthly'], 'keep-monthly'),
          graceSeconds: intOpt(v.grace, 'grace', 30 * 86_400), dryRun: v['dry-run'] ?? false,
        };
        call = async (c) => {
          const r = await c.call<{ kept: string[]; deleted: string[]; dryRun: boolean; gc: { skipped: string | null; blocksDeleted: number; bytesFreed: number } }>(
            'backup.prune', Object.fromEntries(Object.entries(params).filter(([, x]) => x !== undefined)));
          print(r, () => `${r.dryRun ? 'would delete' : 'deleted'} ${r.deleted.length} backup(s), kept ${r.kept.length}; `
            + (r.gc.skipped ? `blocks not collected: ${r.gc.skipped}\n` : `${r.dryRun ? 'would free' : 'freed'} ${r.gc.blocksDeleted} block(s), ${formatSize(r.gc.bytesFreed)}\n`));
          return ExitCode.Ok;
        };
        break;
      }
      case 'cancel': {
        need(1, 1, 'JOB');
        call = async (c) => {
          const r = await c.call<JobView>('job.cancel', { id: args[0] });
          print(r, () => `cancelling job ${r.id} (${r.kind})\n`);
          return ExitCode.Ok;
        };
        break;
      }
      case 'jobs': {
        need(0, 0, 'no arguments');
        call = async (c) => {
          const r = await c.call<{ jobs: JobView[] }>('job.list');
          print(r, () => table(['JOB', 'KIND', 'STATE', 'PROGRESS', 'ERROR'],
            r.jobs.map((j) => [j.id, j.kind, j.state, `${j.percent}% of ${formatSize(j.bytesTotal)}`, j.error?.message ?? '-'])));
          return ExitCode.Ok;
        };
        break;
      }
      case 'targets': {
        need(0, 0, 'no arguments');
        call = async (c) => {
          const r = await c.call<{ targets: { name: string; url: string; encrypted: boolean; uploadLimit: number | null }[] }>('backup.targets');
          print(r, () => table(['NAME', 'URL', 'ENCRYPTED', 'UPLOAD LIMIT'], r.targets.map((t) => [
            t.name, t.url, t.encrypted ? 'yes' : 'no', t.uploadLimit === null ? '-' : `${formatSize(t.uploadLimit)}/s`])));
          return ExitCode.Ok;
        };
        break;
      }
      default:
        return usage(verb === undefined ? 'backup: missing subcommand' : `backup: unknown subcommand '${verb}'`);
    }
  } catch (e) {
    if (e instanceof UsageError) return usage(e.message);
    throw e;
  }
  return withControlClient(controlSocketPath({ control: v.control, dataDir: v['data-dir'] }), call, { help: BACKUP_HELP });
}

const BACKUP_HELP = 'snapnbd backup --help';

function usage(message: string): number {
  return usageFailure(message, BACKUP_HELP);
}
