// Replacing a file whole and crash-safe (backup state files, the schedules file, a directory
// target's objects): written to a temporary name beside it, synced, renamed over the old one,
// and the directory synced, so a crash leaves the old content or the new, never a mix. On a
// failure the temporary file is removed and the old file stays as it was.
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Temporary names are `PATH.tmp-HEX`: a listing skips names containing this. */
export const TMP_MARKER = '.tmp-';

/** Replaces `path` with `data` atomically and durably; `mode` for a new file (default 0o666 less the umask). */
export async function replaceFile(path: string, data: string | Buffer, mode?: number): Promise<void> {
  const tmp = `${path}${TMP_MARKER}${randomBytes(6).toString('hex')}`;
  const f = await open(tmp, 'w', mode);
  try {
    try {
      await f.writeFile(data);
      await f.sync();
    } finally {
      await f.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const d = await open(dirname(path), 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
