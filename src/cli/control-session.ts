// How a CLI command talks to the running server: where its control socket is, one client for the
// command (connected, used, closed however the command ends), and how a failure becomes the exit
// status.
import { resolve, join } from 'node:path';
import { ControlCallError, ControlClient, ControlUnreachableError } from '../control/client.ts';
import { ExitCode, HELP_OPTION, usageFailure } from './command-line.ts';
import { UsageError } from './usage.ts';

/** The options of every command that talks to the control socket (parseArgs form). */
export const CONTROL_CLI_OPTIONS = {
  control: { type: 'string' },
  'data-dir': { type: 'string' },
  json: { type: 'boolean' },
  help: HELP_OPTION,
} as const;

/** Where the socket is: --control, else --data-dir/control.sock, else $SNAPNBD_CONTROL, else ./data. */
export function controlSocketPath(opts: { control?: string | undefined; dataDir?: string | undefined }, env: NodeJS.ProcessEnv = process.env): string {
  if (opts.control !== undefined) return resolve(opts.control);
  if (opts.dataDir !== undefined) return resolve(join(opts.dataDir, 'control.sock'));
  if (env.SNAPNBD_CONTROL !== undefined && env.SNAPNBD_CONTROL !== '') return resolve(env.SNAPNBD_CONTROL);
  return resolve('data', 'control.sock');
}

/** How a control command fails: unreachable (3) or refused by the server (1), said on stderr; other errors rethrown. */
export function controlFailure(e: unknown): number {
  if (e instanceof ControlUnreachableError) {
    process.stderr.write(`snapnbd: ${e.message}\n`);
    return ExitCode.Unreachable;
  }
  if (e instanceof ControlCallError) {
    process.stderr.write(`snapnbd: ${e.code}: ${e.message}\n`);
    return ExitCode.ServerError;
  }
  throw e;
}

export interface ControlClientUse {
  /** Where a UsageError thrown by the body points (default: snapnbd --help). */
  help?: string;
  /** Give up on the whole exchange, connecting included, after this long: as unreachable. */
  timeoutSeconds?: number;
  /** Turns a failure into the exit status instead of usageFailure/controlFailure. */
  failure?: (e: unknown) => number;
}

/**
 * Connects to the control socket at `path`, runs `body` with the client and closes it however
 * the body ends. The exit status is the body's (none: 0); a UsageError is a usage failure (2),
 * an unreachable or refusing server a control failure (3, 1); any other error is rethrown.
 */
export async function withControlClient(
  path: string, body: (c: ControlClient) => Promise<number | void>, use: ControlClientUse = {},
): Promise<number> {
  const held: { client?: ControlClient } = {};
  let timer: NodeJS.Timeout | undefined;
  const session = (async () => {
    held.client = await ControlClient.connect(path);
    return (await body(held.client)) ?? ExitCode.Ok;
  })();
  try {
    const seconds = use.timeoutSeconds;
    if (seconds === undefined) return await session;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ControlUnreachableError(path, `no answer within ${seconds} s`)), seconds * 1000);
    });
    return await Promise.race([session, late]);
  } catch (e) {
    if (use.failure) return use.failure(e);
    if (e instanceof UsageError) return usageFailure(e.message, use.help);
    return controlFailure(e);
  } finally {
    clearTimeout(timer);
    held.client?.close();
    // Timed out while connecting: close the client when (if) it arrives, or the process lingers.
    session.then(() => held.client?.close(), () => undefined);
  }
}
