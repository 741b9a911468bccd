// A minimal JSON-RPC 2.0 client of the control socket (one object per line, protocol/control.md),
// for the VM scenarios' host steps: snapshot, rollback, clone, stats.
import { connect } from 'node:net';
import { once } from 'node:events';

/** A control call that takes longer is a hung server, even on a loaded 2-core machine. */
const CONTROL_TIMEOUT_MS = 60_000;

export class ControlCallError extends Error {
  readonly code: string;
  constructor(method: string, message: string, code: string) {
    super(`${method}: ${code}: ${message}`);
    this.code = code;
  }
}

let nextId = 1;

/** One call on a fresh connection; resolves with `result`, throws ControlCallError on `error`. */
export async function controlCall(socketPath: string, method: string, params?: Record<string, unknown>): Promise<any> {
  const sock = connect(socketPath);
  await once(sock, 'connect');
  const id = nextId++;
  const req: Record<string, unknown> = { jsonrpc: '2.0', id, method };
  if (params !== undefined) req.params = params;
  sock.write(JSON.stringify(req) + '\n');
  let buf = '';
  const timer = setTimeout(() => sock.destroy(new Error(`${method}: no answer in ${CONTROL_TIMEOUT_MS} ms`)), CONTROL_TIMEOUT_MS);
  try {
    for await (const chunk of sock) {
      buf += (chunk as Buffer).toString('utf8');
      const nl = buf.indexOf('\n');
      if (nl < 0) continue;
      const ans = JSON.parse(buf.slice(0, nl)) as { id: number; result?: unknown; error?: { message: string; data?: { code?: string } } };
      if (ans.error) throw new ControlCallError(method, ans.error.message, ans.error.data?.code ?? 'UNKNOWN');
      return ans.result;
    }
    throw new Error(`${method}: the control socket closed without an answer`);
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}
