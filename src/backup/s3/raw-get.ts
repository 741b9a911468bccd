// GETs of whole objects received straight into the caller's buffer, on plain TCP sockets (http:
// endpoints). node:http hands each piece of a body over as a new Buffer (a copy and an external
// allocation per socket read), and a restore's hundreds of MiB of those made V8 run a full
// mark-compact collection every ~10 MiB restored (bench/README.md "Full restore: GET bodies
// straight into the block buffer"). Here the socket's reads (net's `onread`) land in the
// destination itself: the response head in a small scratch buffer, the body at its place in
// `into`. Only what a GET of an object needs: HTTP/1.1, keep-alive, a Content-Length body. A
// response framed otherwise (chunked, no length) fails with RawUnsupported; the caller then uses
// node:http.
import net from 'node:net';

/** The longest response head accepted (also the scratch buffer's size). */
export const RAW_HEAD_MAX = 16 * 1024;
/** Longest error body kept, by this transport and node:http's in client.ts (an S3 error document is small). */
export const ERROR_BODY_MAX = 64 * 1024;

/** The server answered in a framing this client does not read; use node:http instead. */
export class RawUnsupported extends Error {}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface RawHead {
  status: number;
  /** Lower-case names; a repeated header keeps its last value. */
  headers: Record<string, string>;
  /** Bytes of the head, its blank line included. */
  length: number;
}

const HEAD_END = Buffer.from('\r\n\r\n');

/** The response head at the start of `buf`; null while incomplete. Throws on a malformed one. */
export function parseHead(buf: Buffer): RawHead | null {
  const end = buf.indexOf(HEAD_END);
  if (end < 0) return null;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0]!);
  if (!m) throw new Error(`malformed status line '${lines[0]!.slice(0, 80)}'`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`malformed header line '${line.slice(0, 80)}'`);
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(m[1]), headers, length: end + HEAD_END.length };
}

interface Pending {
  /** Where a 2xx body goes when it fits; else the body is collected in `chunks`. */
  into: Buffer | null;
  head: RawHead | null;
  headLen: number;
  dest: Buffer | null;
  want: number;
  got: number;
  chunks: Buffer[];
  kept: number;
  resolve: (r: RawResponse) => void;
  reject: (e: Error) => void;
}

class Conn {
  readonly socket: net.Socket;
  private readonly scratch = Buffer.allocUnsafeSlow(RAW_HEAD_MAX);
  private p: Pending | null = null;
  dead = false;
  private readonly idle: (c: Conn) => void;
  private readonly gone: (c: Conn) => void;

  constructor(host: string, port: number, idle: (c: Conn) => void, gone: (c: Conn) => void) {
    this.idle = idle;
    this.gone = gone;
    this.socket = net.connect({
      host, port, noDelay: true,
      onread: { buffer: () => this.nextBuffer(), callback: (n: number) => { this.onRead(n); return true; } },
    });
    const fail = (e: Error): void => {
      if (this.dead) return;
      this.dead = true;
      this.gone(this);
      this.socket.destroy();
      const p = this.p;
      this.p = null;
      p?.reject(e);
    };
    this.socket.on('error', fail);
    const closed = (): void => {
      const p = this.p;
      fail(new Error(p !== null && p.head !== null ? `short body: ${p.got} of ${p.want} bytes, then the connection closed` : 'connection closed before the response'));
    };
    this.socket.on('end', closed);
    this.socket.on('close', closed);
    this.socket.on('timeout', () => fail(new Error('no data within the idle timeout')));
  }

  request(text: string, into: Buffer | null, idleTimeoutMs: number, signal?: AbortSignal): Promise<RawResponse> {
    return new Promise<RawResponse>((resolve, reject) => {
      const onAbort = (): void => { this.destroy(new Error('aborted')); };
      const done = (): void => { signal?.removeEventListener('abort', onAbort); this.socket.setTimeout(0); };
      this.p = {
        into, head: null, headLen: 0, dest: null, want: -1, got: 0, chunks: [], kept: 0,
        resolve: (r) => { done(); resolve(r); }, reject: (e) => { done(); reject(e); },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.socket.ref();
      this.socket.setTimeout(idleTimeoutMs);
      this.socket.write(text);
    });
  }

  destroy(e: Error): void {
    this.socket.emit('error', e);
  }

  /** Where the socket's next read lands: the body's next bytes in place, else the scratch buffer. */
  private nextBuffer(): Buffer {
    const p = this.p;
    if (p === null) return this.scratch;
    if (p.head === null) return this.scratch.subarray(p.headLen);
    if (p.dest !== null && p.got < p.want) return p.dest.subarray(p.got, p.want);
    return this.scratch;
  }

  private onRead(n: number): void {
    const p = this.p;
    if (p === null) {
      this.destroy(new Error(`${n} bytes from the server with no request pending`));
      return;
    }
    try {
      if (p.head === null) {
        p.headLen += n;
        const head = parseHead(this.scratch.subarray(0, p.headLen));
        if (head === null) {
          if (p.headLen >= RAW_HEAD_MAX) throw new Error(`response head longer than ${RAW_HEAD_MAX} bytes`);
          return;
        }
        this.begin(p, head);
        this.take(p, this.scratch.subarray(head.length, p.headLen));
      } else if (p.dest !== null) {
        p.got += n; // read in place
      } else {
        this.take(p, this.scratch.subarray(0, n));
      }
      if (p.got > p.want) throw new Error(`long body: more than the ${p.want} bytes announced`);
      if (p.got === p.want) this.finish(p);
    } catch (e) {
      this.destroy(e as Error);
    }
  }

  private begin(p: Pending, head: RawHead): void {
    const te = head.headers['transfer-encoding'];
    const cl = head.headers['content-length'];
    if ((te !== undefined && te !== 'identity') || cl === undefined || !/^\d+$/.test(cl)) {
      throw new RawUnsupported(`response without a Content-Length body (transfer-encoding ${te ?? 'none'})`);
    }
    p.head = head;
    p.want = Number(cl);
    const ok = head.status >= 200 && head.status < 300;
    if (ok && p.into !== null && p.want <= p.into.length) p.dest = p.into;
  }

  /** Body bytes that arrived in the scratch buffer. */
  private take(p: Pending, bytes: Buffer): void {
    if (bytes.length === 0) return;
    if (p.dest !== null) {
      bytes.copy(p.dest, p.got, 0, Math.min(bytes.length, p.want - p.got));
    } else {
      const ok = p.head!.status >= 200 && p.head!.status < 300;
      if (ok || p.kept + bytes.length <= ERROR_BODY_MAX) {
        p.chunks.push(Buffer.from(bytes));
        p.kept += bytes.length;
      }
    }
    p.got += bytes.length;
  }

  private finish(p: Pending): void {
    this.p = null;
    const head = p.head!;
    const body = p.dest !== null ? p.dest.subarray(0, p.want) : Buffer.concat(p.chunks);
    const close = (head.headers.connection ?? '').toLowerCase() === 'close';
    if (close) {
      this.dead = true;
      this.gone(this);
      this.socket.destroy();
    } else {
      this.socket.unref();
      this.idle(this);
    }
    p.resolve({ status: head.status, headers: head.headers, body });
  }
}

/** Keep-alive connections to one host:port, at most `maxIdle` kept while idle. */
export class RawGetter {
  private readonly free: Conn[] = [];
  private readonly all = new Set<Conn>();
  private readonly host: string;
  private readonly port: number;
  private readonly maxIdle: number;

  constructor(host: string, port: number, maxIdle: number) {
    this.host = host;
    this.port = port;
    this.maxIdle = maxIdle;
  }

  /**
   * Sends `head` (a whole GET request head, CRLF-terminated) and reads the answer. A 2xx body
   * that fits `into` is received into it and the answer's body is a view of it.
   */
  get(head: string, into: Buffer | null, idleTimeoutMs: number, signal?: AbortSignal): Promise<RawResponse> {
    if (signal?.aborted) return Promise.reject(new Error('aborted'));
    let c = this.free.pop();
    while (c !== undefined && c.dead) c = this.free.pop();
    if (c === undefined) {
      c = new Conn(this.host, this.port, (k) => {
        if (this.free.length < this.maxIdle) this.free.push(k);
        else k.destroy(new Error('closing an idle connection beyond the limit'));
      }, (k) => {
        this.all.delete(k);
        const i = this.free.indexOf(k);
        if (i >= 0) this.free.splice(i, 1);
      });
      this.all.add(c);
    }
    return c.request(head, into, idleTimeoutMs, signal);
  }

  /** How many connections are open (tests check reuse). */
  get connections(): number {
    return this.all.size;
  }

  close(): void {
    for (const c of [...this.all]) c.destroy(new Error('client closed'));
  }
}
