// Writes replies to the socket. Everything sent in one event-loop turn is corked together and
// uncorked in the check phase (setImmediate), so a reply header and its data, and every reply
// whose I/O completed in the same poll phase, leave as one writev; nothing is ever concatenated.
// (nextTick uncorked after each completion callback: one syscall per reply, ~20% of CPU at
// queue depth 32; see bench/README.md.)
import type { Duplex } from 'node:stream';

const EMPTY = Buffer.alloc(0);

export class ReplyWriter {
  private corked = false;
  private readonly socket: Duplex;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  constructor(socket: Duplex) {
    this.socket = socket;
  }

  /** Queue buffers in order. Returns false when the socket wants the caller to wait for 'drain'. */
  send(a: Buffer, b?: Buffer): boolean {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) return true;
    if (!this.corked) {
      this.corked = true;
      s.cork();
      setImmediate(this.uncork);
    }
    let ok = s.write(a);
    if (b !== undefined && b.length > 0) ok = s.write(b);
    return ok;
  }

  /** `done` runs once everything queued so far has been handed to the kernel (or the socket is gone). */
  whenFlushed(done: () => void): void {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) {
      done();
      return;
    }
    s.write(EMPTY, () => done());
  }

  /** Queue many buffers (structured read replies). */
  sendAll(parts: Buffer[]): boolean {
    let ok = true;
    for (const p of parts) if (p.length > 0) ok = this.send(p);
    return ok;
  }
}
