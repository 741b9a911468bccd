// The server the VM scenarios run against: snapnbd itself, `bin/snapnbd serve`
// (test/helpers/server.ts), with a data dir the scenario owns.
import { startServer, type RunningServer, type ServerOptions } from '../helpers/server.ts';

export function startVmServer(opts: ServerOptions & { dataDir: string }): Promise<RunningServer> {
  return startServer(opts);
}
