// Writes replies to the socket. Everything sent in one event-loop turn is corked together and
// uncorked in the check phase (setImmediate), so a reply header and its data, and every reply
// whose I/O completed in the same poll phase, leave as one writev; nothing is ever concatenated.
// (nextTick uncorked after each completion callback: one syscall per reply, ~20% of CPU at
// queue depth 32; see bench/README.md.)
// Bytes a reply holds of the memory budget are handed back once the kernel has the reply: at once
// when the batch's writev took everything, else through one empty write queued after the batch,
// whose callback releases every reply of the batch (a marker per reply cost a buffered chunk and
// a callback per request; bench/README.md, issue 11). A socket whose writes complete later (TLS:
// the TLS socket calls back from a later turn, so the previous batch was still queued after its
// uncork) gets the marker inside the batch instead, as the corked writev's last, empty buffer:
// a marker of its own is one more TLS write, an empty write syscall and a callback per batch
// (bench/README.md, "TLS replies: the budget marker rides in the batch").
// Reply buffers given to recycle() go back the same way, with the batch they were sent in; on a
// socket that is gone, or a write that failed, they are dropped (a later read must never share
// memory the kernel may still read).
import type { Duplex } from 'node:stream';

const EMPTY = Buffer.alloc(0);

export class ReplyWriter {
  private corked = false;
  private readonly socket: Duplex;
  /** Told the bytes given to release() once their replies have left (or the socket is gone). */
  private readonly onFlushed: (bytes: number) => void;
  /** Bytes given to release() for replies of the batch being corked. */
  private batchBytes = 0;
  /** Buffers given to recycle() for replies of the batch being corked. */
  private batchBuffers: Buffer[] = [];
  /** Told the buffers given to recycle() once the kernel has their replies. */
  private readonly onRecycled: (buffers: Buffer[]) => void;
  /** The last batch was still queued right after its uncork: the next one carries its marker. */
  private writesLinger = false;
  private readonly uncork = (): void => {
    this.corked = false;
    const s = this.socket;
    const bytes = this.batchBytes;
    this.batchBytes = 0;
    const buffers = this.batchBuffers.length > 0 ? this.batchBuffers : null;
    if (buffers !== null) this.batchBuffers = [];
    const settles = bytes > 0 || buffers !== null;
    if (settles && this.writesLinger && !s.destroyed && !s.writableEnded) {
      s.write(EMPTY, (err) => this.settle(bytes, err ? null : buffers));
      s.uncork();
      this.writesLinger = s.writableLength !== 0;
      return;
    }
    s.uncork();
    this.writesLinger = s.writableLength !== 0;
    if (!settles) return;
    // Usually the kernel took the whole batch in the writev just made: nothing left to wait for.
    if (!this.writesLinger && !s.destroyed) this.settle(bytes, buffers);
    else this.flushMarker(bytes, buffers);
  };

  constructor(socket: Duplex, onFlushed: (bytes: number) => void = () => undefined, onRecycled: (buffers: Buffer[]) => void = () => undefined) {
    this.socket = socket;
    this.onFlushed = onFlushed;
    this.onRecycled = onRecycled;
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

  /** onFlushed gets `bytes` back once everything queued so far has been handed to the kernel (or the socket is gone). */
  release(bytes: number): void {
    // Corked: settled at uncork, after everything queued so far has gone to the socket.
    if (this.corked) this.batchBytes += bytes;
    else this.flushMarker(bytes, null);
  }

  /** onRecycled gets `buf` (sent before this) once the kernel has everything queued so far. */
  recycle(buf: Buffer): void {
    if (this.corked) this.batchBuffers.push(buf);
    else this.flushMarker(0, [buf]);
  }

  private settle(bytes: number, buffers: Buffer[] | null): void {
    if (bytes > 0) this.onFlushed(bytes);
    if (buffers !== null) this.onRecycled(buffers);
  }

  private flushMarker(bytes: number, buffers: Buffer[] | null): void {
    const s = this.socket;
    if (s.destroyed || s.writableEnded) this.settle(bytes, null);
    else s.write(EMPTY, (err) => this.settle(bytes, err ? null : buffers));
  }

  /** Queue many buffers (structured read replies). */
  sendAll(parts: Buffer[]): boolean {
    let ok = true;
    for (const p of parts) if (p.length > 0) ok = this.send(p);
    return ok;
  }
}
