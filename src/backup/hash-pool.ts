// SHA-256 (or HMAC-SHA256) of whole blocks in a few worker threads, off the event loop: a backup
// names every block it reads by its hash and a restore checks every block it fetches, and on
// one thread those hashes (~2 ms per MiB) queue behind the HTTP and disk work of the same loop.
// The block's memory is transferred to a worker and back (never copied): the caller must use the
// Buffer it gets back and drop the one it passed, which is detached meanwhile. A Buffer that does
// not own its whole ArrayBuffer (a view into a pool) cannot be transferred and is hashed here.
// The workers' code is a string evaluated in the worker: it runs the same from dist/, under tsx
// and under vitest, which load this module from different files.
import { createHash, createHmac } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Workers at most; fewer on a machine with fewer cores. Hashing is one of several stages. */
export const HASH_WORKERS_MAX = 2;
/** Below this, posting to a worker costs more than hashing here. */
export const HASH_OFFLOAD_MIN_BYTES = 64 * 1024;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash, createHmac } = require('node:crypto');
parentPort.on('message', (m) => {
  const data = new Uint8Array(m.buf, m.off, m.len);
  let hex;
  try {
    hex = (m.key ? createHmac('sha256', Buffer.from(m.key)) : createHash('sha256')).update(data).digest('hex');
  } catch (e) {
    parentPort.postMessage({ id: m.id, buf: m.buf, error: String(e) }, [m.buf]);
    return;
  }
  parentPort.postMessage({ id: m.id, buf: m.buf, hex }, [m.buf]);
});
`;

interface Job {
  resolve: (r: HashResult) => void;
  reject: (e: Error) => void;
  off: number;
  len: number;
}

interface Reply {
  id: number;
  buf: ArrayBuffer;
  hex?: string;
  error?: string;
}

export interface HashResult {
  /** 64 hex digits. */
  hex: string;
  /** The same bytes as the Buffer passed in (now usable again; the one passed in is not). */
  data: Buffer;
}

/** The hash here, on the calling thread. */
export function hashHere(data: Buffer, hmacKey: Buffer | null): string {
  return (hmacKey ? createHmac('sha256', hmacKey) : createHash('sha256')).update(data).digest('hex');
}

class HashWorker {
  readonly jobs = new Map<number, Job>();
  private readonly worker: Worker;
  private dead = false;

  constructor(onExit: (w: HashWorker) => void) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.unref();
    this.worker.on('message', (m: Reply) => {
      const job = this.jobs.get(m.id);
      if (!job) return;
      this.jobs.delete(m.id);
      if (this.jobs.size === 0) this.worker.unref();
      const data = Buffer.from(m.buf, job.off, job.len);
      if (m.hex !== undefined) job.resolve({ hex: m.hex, data });
      else job.reject(new Error(`hash worker: ${m.error ?? 'no result'}`));
    });
    const fail = (e: Error): void => {
      if (this.dead) return;
      this.dead = true;
      onExit(this);
      // The transferred memory is gone with the worker: the callers must fail, not hash zeros.
      for (const j of this.jobs.values()) j.reject(new Error(`hash worker stopped: ${e.message}`));
      this.jobs.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** Throws (and leaves `data` usable) when the memory cannot be transferred. */
  post(id: number, data: Buffer, hmacKey: Buffer | null, job: Job): void {
    const buf = data.buffer as ArrayBuffer;
    this.worker.postMessage({ id, buf, off: data.byteOffset, len: data.length, key: hmacKey }, [buf]);
    if (this.jobs.size === 0) this.worker.ref();
    this.jobs.set(id, job);
  }

  terminate(): void {
    this.dead = true;
    void this.worker.terminate();
  }
}

/** A few workers, started on first use and kept (unreferenced while idle: they never hold the process). */
export class HashPool {
  private readonly size: number;
  private readonly workers: HashWorker[] = [];
  private nextId = 1;

  constructor(size = Math.min(HASH_WORKERS_MAX, availableParallelism())) {
    this.size = Math.max(1, size);
  }

  /** The hash of `data`; the bytes come back in `data` of the result. */
  hash(data: Buffer, hmacKey: Buffer | null = null): Promise<HashResult> {
    if (data.length < HASH_OFFLOAD_MIN_BYTES || !ownsItsMemory(data)) {
      return Promise.resolve({ hex: hashHere(data, hmacKey), data });
    }
    const id = this.nextId++;
    const off = data.byteOffset;
    const len = data.length;
    return new Promise<HashResult>((resolve, reject) => {
      try {
        this.pick().post(id, data, hmacKey, { resolve, reject, off, len });
      } catch {
        // No worker could start, or this memory cannot move (e.g. marked untransferable).
        resolve({ hex: hashHere(data, hmacKey), data });
      }
    });
  }

  /** Stops the workers (a pool used again starts new ones). */
  close(): void {
    for (const w of this.workers.splice(0)) w.terminate();
  }

  private pick(): HashWorker {
    let best: HashWorker | undefined;
    for (const w of this.workers) if (!best || w.jobs.size < best.jobs.size) best = w;
    if (best && (best.jobs.size === 0 || this.workers.length >= this.size)) return best;
    const w = new HashWorker((dead) => {
      const i = this.workers.indexOf(dead);
      if (i >= 0) this.workers.splice(i, 1);
    });
    this.workers.push(w);
    return w;
  }
}

/** Whether `data` spans its whole ArrayBuffer, so transferring that buffer moves nothing else. */
function ownsItsMemory(data: Buffer): boolean {
  return data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && !(data.buffer instanceof SharedArrayBuffer);
}

/** The process's pool: backups, restores and verifies share its few threads. */
export const hashPool = new HashPool();
