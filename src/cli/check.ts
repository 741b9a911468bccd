// `snapnbd check --data-dir DIR [--repair] [--json]`: offline verification of a stopped server's
// store. Exit 0 clean (or everything found was repaired), 1 problems remain (or the store is in use), 2 usage error.
import { parseArgs } from 'node:util';
import { checkStore } from '../storage/check.ts';
import { StoreError, StoreErrorCode } from '../storage/types.ts';

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
  let values: { 'data-dir'?: string | undefined; repair?: boolean | undefined; json?: boolean | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'data-dir': { type: 'string' },
        repair: { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    process.stderr.write(`snapnbd check: ${(e as Error).message.split('\n')[0]}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(CHECK_USAGE);
    return 0;
  }
  const dir = values['data-dir'];
  if (!dir) {
    process.stderr.write('snapnbd check: --data-dir DIR is required (see snapnbd check --help)\n');
    return 2;
  }
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
