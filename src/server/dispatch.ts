// The transmission phase's requests, one at a time: refuse what the spec says must be refused
// before storage is touched (validate), run the rest against the export's block device
// (execute), and encode the replies, simple or structured, into the session's reply writer.
// Knows nothing of sockets, flow control or counters of in-flight work: session.ts owns those.
import {
  BASE_ALLOCATION_ID, Cmd, CmdFlag, MAX_BLOCK_STATUS_EXTENTS, MAX_DF_READ, MAX_REQUEST, NbdErrno, ReplyFlag,
  StateFlag, nameOfCmd,
} from '../protocol/constants.ts';
import { RequestError } from '../protocol/errors.ts';
import {
  encodeBlockStatus, encodeErrorChunk, encodeOffsetDataHeader, encodeOffsetHole, encodeSimpleReply,
  type RequestHeader, type StatusDescriptor,
} from '../protocol/transmission.ts';
import type { Payload } from '../protocol/decoder.ts';
import { appendExtent, type Extent } from '../storage/device.ts';
import type { ExportLease } from './exports.ts';
import { allowedCommandFlags } from './negotiate.ts';
import { isPooledRead, replyBuffers, SLAB_READ_MAX } from './reply-buffers.ts';

/** Structured reads shorter than this are sent as one data chunk: a hole lookup costs more than it saves. */
export const SPARSE_READ_MIN = 64 * 1024;

export const REPLY_SLAB_BYTES = 128 * 1024;
/** Slab pieces start 8-byte aligned, like Node's own buffer pool. */
const SLAB_ALIGN = 8;

/** Queues a reply: a header and optionally its data, sent in order without concatenation. */
export type SendReply = (header: Buffer, data?: Buffer) => void;
/** Hands back a pooled reply buffer once everything sent so far has left (reply-writer.ts recycle). */
export type RecycleReply = (buf: Buffer) => void;

/** What the handshake settled that changes how requests are answered. */
export interface DispatchOptions {
  structuredReplies: boolean;
  /** base:allocation was negotiated: BLOCK_STATUS is allowed. */
  baseAllocation: boolean;
}

export class RequestDispatcher {
  private readonly lease: ExportLease;
  private readonly opts: DispatchOptions;
  private readonly send: SendReply;
  /** Null: no pool, every long read gets a buffer of its own. */
  private readonly recycle: RecycleReply | null;
  /** The current reply slab and how much of it is handed out (never reused: pieces die with their replies). */
  private slab: Buffer | null = null;
  private slabUsed = 0;

  constructor(lease: ExportLease, opts: DispatchOptions, send: SendReply, recycle: RecycleReply | null = null) {
    this.lease = lease;
    this.opts = opts;
    this.send = send;
    this.recycle = recycle;
  }

  /** The request's errno if it must be refused before touching storage (spec "Request types"). */
  validate(h: RequestHeader, payload: Payload | null): RequestError | null {
    const dev = this.lease.device;
    const allowed = allowedCommandFlags(this.opts.structuredReplies);
    const bad = (errno: NbdErrno, message: string): RequestError => new RequestError(errno, message);
    const end = h.offset + h.length;
    let flagMask: number = CmdFlag.FUA;
    let writes = false;
    switch (h.type) {
      case Cmd.READ:
        flagMask = allowed.read;
        break;
      case Cmd.WRITE:
        writes = true;
        if (payload === null && h.length > MAX_REQUEST) return bad(NbdErrno.EINVAL, `write of ${h.length} bytes exceeds ${MAX_REQUEST}`);
        break;
      case Cmd.TRIM:
        writes = true;
        break;
      case Cmd.WRITE_ZEROES:
        writes = true;
        flagMask = allowed.zero;
        break;
      case Cmd.FLUSH:
        if (h.offset !== 0 || h.length !== 0) return bad(NbdErrno.EINVAL, 'FLUSH with nonzero offset or length');
        break;
      case Cmd.CACHE:
        break;
      case Cmd.BLOCK_STATUS:
        flagMask = allowed.blockStatus;
        if (!this.opts.baseAllocation) return bad(NbdErrno.EINVAL, 'BLOCK_STATUS without a negotiated meta context');
        break;
      default:
        return bad(NbdErrno.EINVAL, `unknown command ${h.type}`);
    }
    if ((h.flags & ~flagMask) !== 0) return bad(NbdErrno.EINVAL, `flags 0x${h.flags.toString(16)} not valid for ${nameOfCmd(h.type)}`);
    if (writes && dev.readOnly) return bad(NbdErrno.EPERM, 'export is read-only');
    if (h.type !== Cmd.FLUSH) {
      if (h.length === 0) return bad(NbdErrno.EINVAL, 'zero-length request');
      // Like nbdkit: data-bearing writes past the end are ENOSPC, everything else EINVAL.
      const errno = h.type === Cmd.WRITE || h.type === Cmd.WRITE_ZEROES ? NbdErrno.ENOSPC : NbdErrno.EINVAL;
      if (end > dev.size) return bad(errno, `request ends at ${end}, beyond the export size ${dev.size}`);
    }
    if (h.type === Cmd.READ && h.flags & CmdFlag.DF && h.length > MAX_DF_READ) {
      return bad(NbdErrno.EOVERFLOW, `DF read of ${h.length} bytes exceeds ${MAX_DF_READ}`);
    }
    if (h.type === Cmd.READ && h.length > MAX_REQUEST) {
      return bad(NbdErrno.EINVAL, `read of ${h.length} bytes exceeds ${MAX_REQUEST}`);
    }
    return null;
  }

  /** Runs a valid request; its replies are sent before this resolves. Rejects: answer with replyError. */
  async execute(h: RequestHeader, payload: Payload): Promise<void> {
    const lease = this.lease;
    const dev = lease.device;
    const fua = (h.flags & CmdFlag.FUA) !== 0;
    switch (h.type) {
      case Cmd.READ:
        if (this.opts.structuredReplies) await this.readStructured(h);
        else {
          const buf = this.replyBuffer(h.length);
          await dev.read(h.offset, h.length, buf);
          this.send(encodeSimpleReply(NbdErrno.OK, h.cookie), buf);
          this.sent(buf);
        }
        lease.counters.bytesRead += h.length;
        return;
      case Cmd.WRITE:
        if (Buffer.isBuffer(payload)) await dev.write(h.offset, payload, { fua });
        else if (dev.writeGather) await dev.writeGather(h.offset, payload, h.length, { fua });
        else await dev.write(h.offset, Buffer.concat(payload, h.length), { fua });
        lease.counters.bytesWritten += h.length;
        break;
      case Cmd.FLUSH:
        await dev.flush();
        break;
      case Cmd.TRIM:
        await dev.trim(h.offset, h.length, { fua });
        break;
      case Cmd.WRITE_ZEROES:
        await dev.zero(h.offset, h.length, {
          fua,
          noHole: (h.flags & CmdFlag.NO_HOLE) !== 0,
          fast: (h.flags & CmdFlag.FAST_ZERO) !== 0,
        });
        break;
      case Cmd.CACHE:
        await dev.cache(h.offset, h.length);
        break;
      case Cmd.BLOCK_STATUS:
        await this.blockStatus(h);
        return;
    }
    this.send(encodeSimpleReply(NbdErrno.OK, h.cookie));
  }

  replyError(h: RequestHeader, errno: NbdErrno, message: string): void {
    // Structured clients get the message too; the kernel client only speaks simple replies.
    if (this.opts.structuredReplies) this.send(encodeErrorChunk(ReplyFlag.DONE, h.cookie, errno, message));
    else this.send(encodeSimpleReply(errno, h.cookie));
  }

  /** Structured READ: holes as OFFSET_HOLE, data as OFFSET_DATA, the last chunk DONE; DF: one chunk. */
  private async readStructured(h: RequestHeader): Promise<void> {
    const dev = this.lease.device;
    const buf = this.replyBuffer(h.length);
    if ((h.flags & CmdFlag.DF) !== 0 || h.length < SPARSE_READ_MIN) {
      await dev.read(h.offset, h.length, buf);
      this.send(encodeOffsetDataHeader(ReplyFlag.DONE, h.cookie, h.offset, h.length), buf);
      this.sent(buf);
      return;
    }
    const runs = await this.coveringExtents(h.offset, h.length);
    // Read every data run first: an error must be reported before any chunk goes out.
    let pos = 0;
    for (const r of runs) {
      if (!r.zero) await dev.read(h.offset + pos, r.length, buf.subarray(pos, pos + r.length));
      pos += r.length;
    }
    pos = 0;
    runs.forEach((r, i) => {
      const flags = i === runs.length - 1 ? ReplyFlag.DONE : 0;
      if (r.zero) this.send(encodeOffsetHole(flags, h.cookie, h.offset + pos, r.length));
      else this.send(encodeOffsetDataHeader(flags, h.cookie, h.offset + pos, r.length), buf.subarray(pos, pos + r.length));
      pos += r.length;
    });
    this.sent(buf);
  }

  /**
   * A buffer for a READ's data: a piece of the slab when short, from the pool when long, else
   * its own. A read that fails keeps its buffer out of the pool: a read still in flight may
   * fill it.
   */
  private replyBuffer(length: number): Buffer {
    if (length > SLAB_READ_MAX) return this.recycle !== null && isPooledRead(length) ? replyBuffers.take(length) : Buffer.allocUnsafe(length);
    let slab = this.slab;
    if (slab === null || this.slabUsed + length > slab.length) {
      slab = this.slab = Buffer.allocUnsafeSlow(REPLY_SLAB_BYTES);
      this.slabUsed = 0;
    }
    const piece = slab.subarray(this.slabUsed, this.slabUsed + length);
    this.slabUsed += Math.ceil(length / SLAB_ALIGN) * SLAB_ALIGN;
    return piece;
  }

  /** Every reply that uses `buf` is queued: a pooled buffer goes back once they have left. */
  private sent(buf: Buffer): void {
    if (this.recycle !== null && isPooledRead(buf.length)) this.recycle(buf);
  }

  /** Extents exactly covering [offset, offset+length), adjacent runs of the same kind merged. */
  private async coveringExtents(offset: number, length: number): Promise<Extent[]> {
    const dev = this.lease.device;
    const out: Extent[] = [];
    let pos = 0;
    while (pos < length) {
      const got = await dev.extents(offset + pos, length - pos);
      const before = pos;
      for (const e of got) {
        const len = Math.min(e.length, length - pos);
        if (len <= 0) break;
        appendExtent(out, len, e.hole, e.zero);
        pos += len;
      }
      // No progress (no extents, or only empty ones): a storage bug must not spin forever.
      if (pos === before) throw new RequestError(NbdErrno.EIO, 'storage returned no extents');
    }
    return out;
  }

  private async blockStatus(h: RequestHeader): Promise<void> {
    const dev = this.lease.device;
    const got = await dev.extents(h.offset, h.length);
    const descriptors: StatusDescriptor[] = [];
    let covered = 0;
    for (const e of got) {
      const len = Math.min(e.length, h.length - covered);
      if (len <= 0) break;
      const flags = (e.hole ? StateFlag.HOLE : 0) | (e.zero ? StateFlag.ZERO : 0);
      const last = descriptors[descriptors.length - 1];
      if (last && last.flags === flags) last.length += len;
      else {
        if (descriptors.length === MAX_BLOCK_STATUS_EXTENTS) break;
        descriptors.push({ length: len, flags });
      }
      covered += len;
    }
    if (descriptors.length === 0) throw new RequestError(NbdErrno.EIO, 'storage returned no extents');
    if (h.flags & CmdFlag.REQ_ONE) descriptors.length = 1;
    this.send(encodeBlockStatus(ReplyFlag.DONE, h.cookie, BASE_ALLOCATION_ID, descriptors));
  }
}
