// `snapnbd console url`: the running server's web console login link. The address comes from the
// server itself (server.info's `http` listener, over the control socket), the token from the
// data dir's console.token: only a user who may read that file gets a working link.
import { dirname, resolve } from 'node:path';
import { loginUrl, readToken, tokenPath } from '../http/console/token.ts';
import { commandPrologue, ExitCode, HELP_OPTION, usageFailure } from './command-line.ts';
import { controlSocketPath, withControlClient } from './control-session.ts';

export const CONSOLE_USAGE = `Usage: snapnbd console url [--data-dir DIR] [--control PATH]

Prints the login link of a running server's web console (serve --http ADDR): its address, and the
token from DIR/console.token. DIR defaults to the control socket's directory (--control PATH,
else $SNAPNBD_CONTROL, else ./data/control.sock).
`;

export async function runConsoleCli(argv: string[]): Promise<number> {
  const parsed = commandPrologue(argv, {
    allowPositionals: true,
    options: { 'data-dir': { type: 'string' }, control: { type: 'string' }, help: HELP_OPTION },
  }, CONSOLE_USAGE, usage);
  if (typeof parsed === 'number') return parsed;
  const v = parsed.values;
  const [verb, ...extra] = parsed.positionals;
  if (verb !== 'url') return usage(verb === undefined ? 'console: missing subcommand (url)' : `console: unknown subcommand '${verb}'`);
  if (extra.length > 0) return usage(`console url: unexpected '${extra.join(' ')}'`);
  const path = controlSocketPath({ control: v.control, dataDir: v['data-dir'] });
  const dataDir = resolve(v['data-dir'] ?? dirname(path));
  return withControlClient(path, async (client) => {
    const info = await client.call<{ listeners: string[] }>('server.info', {});
    const http = info.listeners.find((l) => /^https? /.test(l));
    if (http === undefined) {
      process.stderr.write('snapnbd: the server has no web console (start it with serve --http ADDR)\n');
      return ExitCode.ServerError;
    }
    let token: string;
    try {
      token = readToken(dataDir);
    } catch (e) {
      process.stderr.write(`snapnbd: cannot read the console token ${tokenPath(dataDir)}: ${(e as Error).message}\n`);
      return ExitCode.ServerError;
    }
    const [scheme, address] = http.split(' ') as ['http' | 'https', string];
    process.stdout.write(`${loginUrl(address, token, scheme)}\n`);
    return ExitCode.Ok;
  }, { help: CONSOLE_HELP });
}

const CONSOLE_HELP = 'snapnbd console --help';

function usage(message: string): number {
  return usageFailure(message, CONSOLE_HELP);
}
