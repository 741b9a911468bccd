// Line framing for the control socket: one JSON text per '\n'-terminated line. A pure, resumable
// splitter (no I/O), so a test can feed it any split of the input. A line longer than the cap is
// reported once, as soon as it is known to be too long, and the rest of it is skipped up to its
// newline: the connection stays usable and memory stays bounded.

/** Longest accepted line, bytes, without its newline. */
export const MAX_LINE_BYTES = 1024 * 1024;

export type Frame =
  | { kind: 'line'; text: string }
  | { kind: 'oversize' };

const NEWLINE = 0x0a;
const CR = 0x0d;

export class LineSplitter {
  private readonly maxLine: number;
  private parts: Buffer[] = [];
  private partLen = 0;
  /** Inside an oversize line: skipping to its newline. */
  private discarding = false;

  constructor(maxLine: number = MAX_LINE_BYTES) {
    this.maxLine = maxLine;
  }

  /** Frames completed by `chunk`, in order. */
  push(chunk: Buffer): Frame[] {
    const out: Frame[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      const nl = chunk.indexOf(NEWLINE, pos);
      const end = nl < 0 ? chunk.length : nl;
      if (this.discarding) {
        if (nl >= 0) this.discarding = false;
      } else if (this.partLen + (end - pos) > this.maxLine) {
        // Too long, whether or not its end is in sight: report now, skip the rest.
        out.push({ kind: 'oversize' });
        this.parts = [];
        this.partLen = 0;
        this.discarding = nl < 0;
      } else if (nl >= 0) {
        out.push({ kind: 'line', text: this.take(chunk.subarray(pos, end)) });
      } else {
        this.parts.push(chunk.subarray(pos, end));
        this.partLen += end - pos;
      }
      if (nl < 0) break;
      pos = nl + 1;
    }
    return out;
  }

  /** At end of input: an unterminated last line still counts (a client may half-close after it). */
  end(): Frame[] {
    if (this.discarding || this.partLen === 0) {
      this.discarding = false;
      return [];
    }
    return [{ kind: 'line', text: this.take(Buffer.alloc(0)) }];
  }

  private take(last: Buffer): string {
    let buf = this.parts.length === 0 ? last : Buffer.concat([...this.parts, last]);
    this.parts = [];
    this.partLen = 0;
    if (buf.length > 0 && buf.readUInt8(buf.length - 1) === CR) buf = buf.subarray(0, buf.length - 1);
    return buf.toString('utf8');
  }
}
