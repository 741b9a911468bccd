// `snapnbd health`: for monitors (systemd, Nagios-style checks, container health probes). Asks the
// running server's `server.health` and answers with the exit status: 0 healthy, 1 degraded (the
// first stdout line gives the reasons), 2 usage error, 3 the server cannot be reached or does not
// answer in time.
import { parseArgs } from 'node:util';
import { ControlCallError, ControlClient, ControlUnreachableError } from '../control/client.ts';
import type { HealthReport } from '../control/health.ts';
import { controlSocketPath } from './control-commands.ts';
import { argsRefusal } from './usage.ts';

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
  let v;
  try {
    v = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: {
        control: { type: 'string' }, 'data-dir': { type: 'string' }, 'min-free': { type: 'string' },
        timeout: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    return usage(argsRefusal(e));
  }
  if (v.help) {
    process.stdout.write(HEALTH_USAGE);
    return HealthExit.Healthy;
  }
  const minFree = v['min-free'] === undefined ? undefined : Number(v['min-free'].replace(/%$/, ''));
  if (minFree !== undefined && !(Number.isInteger(minFree) && minFree >= 0 && minFree <= 100)) return usage(`--min-free: '${v['min-free']}' is not a whole percentage 0-100`);
  const timeout = Number(v.timeout ?? HEALTH_TIMEOUT_SECONDS_DEFAULT);
  if (!(timeout > 0 && timeout <= 3600)) return usage(`--timeout: '${v.timeout}' is not a number of seconds (0-3600]`);
  const path = controlSocketPath({ control: v.control, dataDir: v['data-dir'] });

  let client: ControlClient | undefined;
  let timer: NodeJS.Timeout | undefined;
  let ask: Promise<HealthReport> | undefined;
  try {
    ask = (async () => {
      client = await ControlClient.connect(path);
      return client.call<HealthReport>('server.health', minFree === undefined ? {} : { minFreePercent: minFree });
    })();
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ControlUnreachableError(path, `no answer within ${timeout} s`)), timeout * 1000);
    });
    const report = await Promise.race([ask, late]);
    const failed = report.checks.filter((c) => !c.ok);
    if (v.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    else {
      const head = report.status === 'ok' ? 'healthy' : `degraded: ${failed.map((c) => `${c.name}: ${c.detail}`).join('; ') || 'no checks ran'}`;
      process.stdout.write(`${head}\n${report.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}\n`).join('')}`);
    }
    return report.status === 'ok' ? HealthExit.Healthy : HealthExit.Degraded;
  } catch (e) {
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
  } finally {
    clearTimeout(timer);
    (client as ControlClient | undefined)?.close();
    // Timed out while connecting: close the client when (if) it arrives, or the process lingers.
    ask?.then(() => (client as ControlClient | undefined)?.close(), () => undefined);
  }
}

function usage(msg: string): number {
  process.stderr.write(`snapnbd health: ${msg} (see snapnbd health --help)\n`);
  return HealthExit.Usage;
}
