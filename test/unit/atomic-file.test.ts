// replaceFile, the one write-temp/sync/rename/sync-dir of the backup state files, the schedules
// file and a directory target's objects: it replaces whole, honours the mode, and leaves no
// temporary file behind when it fails.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { replaceFile, TMP_MARKER } from '../../src/util/atomic-file.ts';

const dir = mkdtempSync(join(tmpdir(), 'snapnbd-atomic-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('replaceFile', () => {
  it('creates, then replaces the whole content; a new file gets the mode asked for', async () => {
    const p = join(dir, 'a.json');
    await replaceFile(p, 'first, longer content', 0o600);
    expect(readFileSync(p, 'utf8')).toBe('first, longer content');
    expect(statSync(p).mode & 0o777).toBe(0o600);
    await replaceFile(p, Buffer.from('second'));
    expect(readFileSync(p, 'utf8')).toBe('second');
    expect(readdirSync(dir).filter((n) => n.includes(TMP_MARKER))).toEqual([]);
  });

  it('fails without leaving its temporary file, and the old entry stays', async () => {
    const sub = join(dir, 'busy');
    mkdirSync(sub);
    const p = join(sub, 'target');
    mkdirSync(p); // a non-empty directory where the file should go: the rename fails
    writeFileSync(join(p, 'keep'), 'x');
    await expect(replaceFile(p, 'new')).rejects.toThrow();
    expect(readdirSync(sub)).toEqual(['target']);
    expect(readFileSync(join(p, 'keep'), 'utf8')).toBe('x');
  });
});
