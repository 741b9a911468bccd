// What receiving costs the event loop, without any NBD: 1 GiB over loopback TCP from a child
// process, read through 'data' events (Node's 64 KiB chunks, what session.ts does) or through
// `onread` into fresh buffers of a chosen size. Node 20 takes `onread` only in `new net.Socket()`,
// so the accepted handle is rewrapped here through the undocumented `handle` option: a
// measurement of what that would save, not a pattern the server uses.
// Run: node --import tsx bench/micro/socket-receive.ts [rounds, default 3]
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const TOTAL = 1024 * 1024 * 1024;
const SEND = 1024 * 1024;
const ONREAD_SIZES = [256 * 1024, 1024 * 1024];

type Mode = { kind: 'data' } | { kind: 'onread'; size: number };

function client(port: number): void {
  const s = net.connect(port, '127.0.0.1', () => {
    const b = Buffer.alloc(SEND, 7);
    let sent = 0;
    const pump = (): void => {
      while (sent < TOTAL) {
        sent += b.length;
        if (!s.write(b)) {
          s.once('drain', pump);
          return;
        }
      }
      s.end();
    };
    pump();
  });
}

function receive(mode: Mode): Promise<{ cpuMs: number; bytes: number }> {
  return new Promise((resolve) => {
    const srv = net.createServer({ pauseOnConnect: mode.kind === 'onread' }, (sock) => {
      let got = 0;
      const c0 = process.cpuUsage();
      const done = (): void => {
        const c = process.cpuUsage(c0);
        srv.close();
        resolve({ cpuMs: (c.user + c.system) / 1000, bytes: got });
      };
      if (mode.kind === 'data') {
        sock.on('data', (d: Buffer) => { got += d.length; });
        sock.on('end', done);
        return;
      }
      const handle = (sock as unknown as { _handle: unknown })._handle;
      const size = mode.size;
      const s2 = new net.Socket({ handle, onread: { buffer: () => Buffer.allocUnsafeSlow(size), callback: (n: number) => { got += n; } } } as net.SocketConstructorOpts);
      s2.on('end', done);
      s2.resume();
    });
    srv.listen(0, '127.0.0.1', () => {
      fork(fileURLToPath(import.meta.url), ['client', String((srv.address() as net.AddressInfo).port)]);
    });
  });
}

if (process.argv[2] === 'client') client(Number(process.argv[3]));
else {
  const rounds = Number(process.argv[2] ?? 3);
  const modes: Mode[] = [{ kind: 'data' }, ...ONREAD_SIZES.map((size): Mode => ({ kind: 'onread', size }))];
  for (let r = 0; r < rounds; r++) {
    for (const m of modes) {
      const { cpuMs, bytes } = await receive(m);
      const name = m.kind === 'data' ? "'data' events" : `onread ${m.size / 1024} KiB`;
      console.log(`round ${r + 1} ${name}: CPU ${(cpuMs / (bytes / TOTAL)).toFixed(0)} ms/GiB`);
    }
  }
}
