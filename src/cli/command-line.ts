// What every snapnbd subcommand does with its command line before its own work: strict parsing,
// -h/--help, a refused line (one line on stderr, exit 2), and the VOLUME@SNAPSHOT argument.
import { parseArgs } from 'node:util';
import { parseExportName } from '../volumes/export-name.ts';
import { argsRefusal, UsageError } from './usage.ts';

/** The exit status of the commands that talk to a server: 0 ok, 1 refused, 2 usage, 3 unreachable. */
export const ExitCode = { Ok: 0, ServerError: 1, Usage: 2, Unreachable: 3 } as const;

/** -h/--help, which every subcommand takes. */
export const HELP_OPTION = { type: 'boolean', short: 'h' } as const;

interface OptionConfig { type: 'string' | 'boolean'; short?: string; multiple?: boolean }
interface CommandLineConfig {
  options: { help: typeof HELP_OPTION } & Record<string, OptionConfig>;
  allowPositionals?: boolean;
}
type Parsed<T extends CommandLineConfig> = ReturnType<typeof parseArgs<T & { args: string[]; strict: true }>>;

/** parseArgs, strict; what it refuses becomes a UsageError of one line. */
export function parseCommandLine<const T extends CommandLineConfig>(argv: string[], config: T): Parsed<T> {
  try {
    return parseArgs({ ...config, args: argv, strict: true as const });
  } catch (e) {
    throw new UsageError(argsRefusal(e));
  }
}

/**
 * A subcommand's first step: its parsed command line, or the exit status when there is nothing
 * more to do: --help printed `usage` (0), or `refuse` said what parseArgs refused (its status).
 */
export function commandPrologue<const T extends CommandLineConfig>(
  argv: string[], config: T, usage: string, refuse: (message: string) => number,
): Parsed<T> | number {
  let parsed: Parsed<T>;
  try {
    parsed = parseCommandLine(argv, config);
  } catch (e) {
    return refuse((e as UsageError).message);
  }
  if ((parsed.values as { help?: boolean }).help) {
    process.stdout.write(usage);
    return ExitCode.Ok;
  }
  return parsed;
}

/** A command line refused before anything runs: one line naming where help is, exit 2. */
export function usageFailure(message: string, helpCommand = 'snapnbd --help', who = 'snapnbd'): number {
  process.stderr.write(`${who}: ${message} (see ${helpCommand})\n`);
  return ExitCode.Usage;
}

/** The same for the commands that name themselves (serve, health, check): `snapnbd health: MSG (see snapnbd health --help)`. */
export function commandUsageFailure(command: string, message: string): number {
  return usageFailure(message, `snapnbd ${command} --help`, `snapnbd ${command}`);
}

/** A `VOLUME@SNAPSHOT` argument (the export-name grammar), both parts given; `what` names the command. */
export function snapshotArg(spec: string, what: string): { volume: string; snapshot: string } {
  const { volume, snapshot } = parseExportName(spec);
  if (volume === '' || snapshot === null || snapshot === '') throw new UsageError(`${what}: '${spec}' is not VOLUME@SNAPSHOT`);
  return { volume, snapshot };
}
