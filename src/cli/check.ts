// `snapnbd check --data-dir DIR [--repair] [--json]`: offline verification of a stopped server's
// store. Exit 0 clean (or everything found was repaired), 1 problems remain (or the store is in use), 2 usage error.
import { checkStore } from '../storage/check.ts';
import { StoreError, StoreErrorCode } from '../storage/types.ts';
import { commandPrologue, commandUsageFailure, HELP_OPTION } from './command-line.ts';

export const CHECK_USAGE = `Usage: snapnbd check --data-dir DIR [--repair] [--json]

Verifies the store in DIR offline: superblocks, journal, every map and reference count, segment
files and backing files. Reports leaks and inconsistencies. A store belongs to one process at a
time: a store a running server has open is refused (naming the server).

Options:
  --data-dir DIR   the store to check (required)
  --repair         remove leaks (unreferenced files and file tails, an uncommitted journal tail)
  --json           print {"ok", "problems", "repaired"} as JSON
  -h, --help       this text

Exit status: 0 clean (or all problems repaired), 1 problems found or the store is in use,
2 usage error.
`;

export async function runCheck(argv: string[]): Promise<number> {
  const parsed = commandPrologue(argv, {
    options: { 'data-dir': { type: 'string' }, repair: { type: 'boolean' }, json: { type: 'boolean' }, help: HELP_OPTION },
  }, CHECK_USAGE, usage);
  if (typeof parsed === 'number') return parsed;
  const values = parsed.values;
  const dir = values['data-dir'];
  if (!dir) return usage('--data-dir DIR is required');
  let r;
  try {
    r = await checkStore(dir, { repair: values.repair === true });
  } catch (e) {
    if (!(e instanceof StoreError && e.code === StoreErrorCode.StoreLocked)) throw e;
    process.stderr.write(`snapnbd check: ${e.message}\n`);
    return 1;
  }
  if (values.json) process.stdout.write(JSON.stringify(r) + '\n');
  else {
    for (const p of r.problems) process.stdout.write(`problem: ${p}\n`);
    for (const p of r.repaired) process.stdout.write(`repaired: ${p}\n`);
    process.stdout.write(r.ok ? (r.problems.length === 0 ? `${dir}: clean\n` : `${dir}: all problems repaired\n`) : `${dir}: ${r.problems.length} problem(s)\n`);
  }
  return r.ok ? 0 : 1;
}

function usage(message: string): number {
  return commandUsageFailure('check', message);
}
