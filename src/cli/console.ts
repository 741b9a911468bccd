// `snapnbd console url`: the running server's web console login link. The address comes from the
// server itself (server.info's `http` listener, over the control socket), the token from the
// data dir's console.token: only a user who may read that file gets a working link.
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ControlClient } from '../control/client.ts';
import { loginUrl, readToken, tokenPath } from '../http/console/token.ts';
import { controlFailure, controlSocketPath, ExitCode, usageFailure } from './control-commands.ts';
import { argsRefusal } from './usage.ts';

export const CONSOLE_USAGE = `Usage: snapnbd console url [--data-dir DIR] [--control PATH]

Prints the login link of a running server's web console (serve --http ADDR): its address, and the
token from DIR/console.token. DIR defaults to the control socket's directory (--control PATH,
else $SNAPNBD_CONTROL, else ./data/control.sock).
`;

export async function runConsoleCli(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { 'data-dir': { type: 'string' }, control: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    return usage(argsRefusal(e));
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(CONSOLE_USAGE);
    return ExitCode.Ok;
  }
  const [verb, ...extra] = parsed.positionals;
  if (verb !== 'url') return usage(verb === undefined ? 'console: missing subcommand (url)' : `console: unknown subcommand '${verb}'`);
  if (extra.length > 0) return usage(`console url: unexpected '${extra.join(' ')}'`);
  const path = controlSocketPath({ control: v.control, dataDir: v['data-dir'] });
  const dataDir = resolve(v['data-dir'] ?? dirname(path));
  let client: ControlClient | undefined;
  try {
    client = await ControlClient.connect(path);
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
  } catch (e) {
    return controlFailure(e);
  } finally {
    client?.close();
  }
}

function usage(message: string): number {
  return usageFailure(message, 'snapnbd console --help');
}
