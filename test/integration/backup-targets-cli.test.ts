// `--backup-target NAME=URL?upload-limit=RATE` through the real CLI: a bad rate stops `serve`
// with exit 2 and one line naming the option; a good one shows in `snapnbd backup targets`
// (and backup.targets) beside a target without a limit.
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, startServer, tempDir, type RunningServer } from '../helpers/server.ts';


describe('backup targets with an upload limit', () => {
  let s: RunningServer | undefined;
  afterAll(async () => { await s?.stop(); });

  it('refuses a rate that is not one with exit 2, in one line', async () => {
    for (const rate of ['fast', '1K', '']) {
      const r = await runCli(['serve', '--data-dir', tempDir(), '--backup-target', `t=file://${tempDir()}?upload-limit=${rate}`]);
      expect(r.code, rate).toBe(2);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(/--backup-target: upload-limit=: '.*' is not a rate of at least 64K/);
    }
  });

  it('lists each target with its limit', async () => {
    const slow = tempDir();
    const fast = tempDir();
    s = await startServer({ args: ['--backup-target', `slow=file://${slow}?upload-limit=20M`, '--backup-target', `fast=file://${fast}`] });
    const r = await runCli(['backup', 'targets', '--control', s.controlPath]);
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s{2,}/));
    expect(rows).toEqual([
      ['NAME', 'URL', 'ENCRYPTED', 'UPLOAD LIMIT'],
      ['slow', `file://${slow}`, 'no', '20 MiB/s'],
      ['fast', `file://${fast}`, 'no', '-'],
    ]);
    const j = await runCli(['backup', 'targets', '--control', s.controlPath, '--json']);
    expect(JSON.parse(j.stdout)).toEqual({ targets: [
      { name: 'slow', url: `file://${slow}`, encrypted: false, uploadLimit: 20 * 1024 * 1024 },
      { name: 'fast', url: `file://${fast}`, encrypted: false, uploadLimit: null },
    ] });
  });
});
