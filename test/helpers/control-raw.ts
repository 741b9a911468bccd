// A raw line client of the control socket for tests: send any bytes, read answers line by line.
import net from 'node:net';

export interface RawControl {
  socket: net.Socket;
  send(data: string | Buffer): void;
  /** The next answer line, parsed; rejects after `timeoutMs`. */
  next(timeoutMs?: number): Promise<unknown>;
  /** Lines received so far. */
  lines: string[];
  close(): void;
}

export async function rawControl(path: string): Promise<RawControl> {
  const socket = net.connect(path);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const lines: string[] = [];
  const waiters: (() => void)[] = [];
  let buf = '';
  socket.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
      for (const w of waiters.splice(0)) w();
    }
  });
  socket.on('close', () => { for (const w of waiters.splice(0)) w(); });
  let read = 0;
  return {
    socket,
    lines,
    send: (d) => { socket.write(d); },
    async next(timeoutMs = 60_000) {
      const deadline = Date.now() + timeoutMs;
      while (lines.length <= read) {
        if (socket.destroyed) throw new Error('control connection closed before an answer');
        if (Date.now() > deadline) throw new Error(`no answer within ${timeoutMs} ms`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 200);
        });
      }
      return JSON.parse(lines[read++]!) as unknown;
    },
    close: () => socket.destroy(),
  };
}

export const rpc = (id: unknown, method: string, params?: Record<string, unknown>): string =>
  `${JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) })}\n`;
