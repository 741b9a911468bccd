// A target in a directory (mounted disk, NAS). An object appears whole or not at all: written to
// a temporary name, fsynced, renamed, and the directory fsynced.
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import { replaceFile, TMP_MARKER } from '../util/atomic-file.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import type { ObjectEntry, ObjectStore } from './target.ts';

export class FileTarget implements ObjectStore {
  readonly display: string;
  private readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
    this.display = `file://${dir}`;
  }

  private path(key: string): string {
    if (key.split('/').some((p) => p === '..' || p === '.' || p === '')) throw new Error(`bad object key '${key}'`);
    return join(this.dir, key);
  }

  async check(): Promise<void> {
    const st = await fs.stat(this.dir).catch(() => null);
    if (!st?.isDirectory()) throw new BackupError(BackupErrorCode.TargetNotFound, `target directory ${this.dir} does not exist`);
  }

  async put(key: string, data: Buffer): Promise<void> {
    const p = this.path(key);
    await fs.mkdir(dirname(p), { recursive: true });
    await replaceFile(p, data);
  }

  async get(key: string, _signal?: AbortSignal, into?: Buffer): Promise<Buffer | null> {
    try {
      if (into === undefined) return await fs.readFile(this.path(key));
      const fh = await fs.open(this.path(key), 'r');
      try {
        const size = (await fh.stat()).size;
        if (size > into.length) return await fh.readFile();
        let got = 0;
        while (got < size) {
          const { bytesRead } = await fh.read(into, got, size - got, got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        return into.subarray(0, got);
      } finally {
        await fh.close();
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await fs.stat(this.path(key)).catch(() => null))?.isFile() ?? false;
  }

  async delete(key: string): Promise<void> {
    await fs.rm(this.path(key), { force: true });
  }

  async *list(prefix: string): AsyncIterable<ObjectEntry> {
    const out: ObjectEntry[] = [];
    const walk = async (rel: string): Promise<void> => {
      const entries = await fs.readdir(join(this.dir, rel), { withFileTypes: true }).catch(() => []);
      for (const e of entries) {
        const key = rel === '' ? e.name : `${rel}/${e.name}`;
        if (e.isDirectory()) {
          if (prefix.startsWith(`${key}/`) || key.startsWith(prefix)) await walk(key);
        } else if (e.isFile() && key.startsWith(prefix) && !e.name.includes(TMP_MARKER)) {
          const st = await fs.stat(join(this.dir, key)).catch(() => null);
          if (st) out.push({ key, size: st.size, lastModified: st.mtime });
        }
      }
    };
    await walk('');
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* out;
  }

  close(): void {
    // nothing held open
  }
}
