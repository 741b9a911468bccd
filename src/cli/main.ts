// The snapnbd command line: dispatches to the subcommands. Returns through process.exitCode so
// the process ends when its work is done.
import { runCheck } from './check.ts';
import { runConsoleCli } from './console.ts';
import { runControlCli } from './control-commands.ts';
import { runHealth } from './health.ts';
import { runBackupCli } from './backup-commands.ts';
import { runScheduleCli } from './schedule-commands.ts';
import { runServe } from './serve.ts';
import { usageFailure } from './command-line.ts';
import { MAIN_USAGE } from './usage.ts';
import { versionLine } from './version.ts';
import { runStreamCli } from './stream-commands.ts';

export async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  let code: number;
  switch (command) {
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(MAIN_USAGE);
      code = 0;
      break;
    case '--version':
      process.stdout.write(versionLine() + '\n');
      code = 0;
      break;
    case 'serve':
      code = await runServe(rest);
      break;
    case 'check':
      code = await runCheck(rest);
      break;
    case 'health':
      code = await runHealth(rest);
      break;
    case 'console':
      code = await runConsoleCli(rest);
      break;
    case 'volume':
    case 'snapshot':
      code = (rest[0] === 'export' && command === 'snapshot') || (rest[0] === 'import' && command === 'volume')
        ? await runStreamCli(argv) : await runControlCli(argv);
      break;
    case 'clone':
    case 'stats':
      code = await runControlCli(argv);
      break;
    case 'backup':
      code = await runBackupCli(rest);
      break;
    case 'schedule':
      code = await runScheduleCli(rest);
      break;
    case undefined:
      code = usageFailure('missing command');
      break;
    default:
      code = usageFailure(`unknown command '${command}'`);
  }
  process.exitCode = code;
  if (command === 'serve') process.exit(code); // stray handles (timers, sockets) must not keep a stopped server alive
}
