// `snapnbd health`: for monitors (systemd, Nagios-style checks, container health probes). Asks the
// running server's `server.health` and answers with the exit status: 0 healthy, 1 degraded (the
// first stdout line gives the reasons), 2 usage error, 3 the server cannot be reached or does not
// answer in time.
import { ControlCallError, ControlUnreachableError } from '../control/client.ts';
import type { HealthReport } from '../control/health.ts';
import { commandPrologue, commandUsageFailure } from './command-line.ts';
import { CONTROL_CLI_OPTIONS, controlSocketPath, withControlClient } from './control-session.ts';
import { resultPrinter } from './output.ts';

export const HealthExit = { Healthy: 0, Degraded: 1, Usage: 2, Unreachable: 3 } as const;
/** A server that takes longer than this to answer is as good as unreachable to a monitor. */
export const HEALTH_TIMEOUT_SECONDS_DEFAULT = 10;

export const HEALTH_USAGE = `Usage: snapnbd health [--control PATH | --data-dir DIR] [--min-free PERCENT]
                      [--timeout SECONDS] [--json]

Checks a running server: its data dir takes a synced write, its file system has at least
--min-free percent free (default 5), and the last run of each snapshot schedule and backup
succeeded. Prints 'healthy' or 'degraded: REASONS', then one line per check.
Exit status: 0 healthy, 1 degraded, 2 usage error, 3 the server cannot be reached or did not
answer within --timeout seconds (default ${HEALTH_TIMEOUT_SECONDS_DEFAULT}).
`;

export async function runHealth(argv: string[]): Promise<number> {
  const parsed = commandPrologue(argv, {
    options: { ...CONTROL_CLI_OPTIONS, 'min-free': { type: 'string' }, timeout: { type: 'string' } },
  }, HEALTH_USAGE, usage);
  if (typeof parsed === 'number') return parsed;
  const v = parsed.values;
  const minFree = v['min-free'] === undefined ? undefined : Number(v['min-free'].replace(/%$/, ''));
  if (minFree !== undefined && !(Number.isInteger(minFree) && minFree >= 0 && minFree <= 100)) return usage(`--min-free: '${v['min-free']}' is not a whole percentage 0-100`);
  const timeout = Number(v.timeout ?? HEALTH_TIMEOUT_SECONDS_DEFAULT);
  if (!(timeout > 0 && timeout <= 3600)) return usage(`--timeout: '${v.timeout}' is not a number of seconds (0-3600]`);
  const path = controlSocketPath({ control: v.control, dataDir: v['data-dir'] });

  return withControlClient(path, async (client) => {
    const report = await client.call<HealthReport>('server.health', minFree === undefined ? {} : { minFreePercent: minFree });
    const failed = report.checks.filter((c) => !c.ok);
    resultPrinter(v.json ?? false)(report, () => {
      const head = report.status === 'ok' ? 'healthy' : `degraded: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ') || 'no checks ran'}`;
      return `${head}\n${report.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}\n`).join('')}`;
    });
    return report.status === 'ok' ? HealthExit.Healthy : HealthExit.Degraded;
  }, { timeoutSeconds: timeout, failure: healthFailure });
}

/** A monitor reads stdout: unreachable (3), or a server that answers but cannot vouch (1). */
function healthFailure(e: unknown): number {
  if (e instanceof ControlUnreachableError) {
    process.stdout.write(`unreachable: ${e.message}\n`);
    return HealthExit.Unreachable;
  }
  if (e instanceof ControlCallError) {
    // A server too old for server.health, or one refusing it: it answers, but cannot vouch.
    process.stdout.write(`degraded: server.health failed: ${e.code}: ${e.message}\n`);
    return HealthExit.Degraded;
  }
  throw e;
}

function usage(msg: string): number {
  return commandUsageFailure('health', msg);
}
