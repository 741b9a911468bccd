// The soak's CI smoke: `npm run soak -- --minutes 2` with a kill -9 and restart every 45 s must
// end with zero errors, every volume, snapshot and clone as answered, and a clean check.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { REPO_ROOT } from '../helpers/server.ts';

const MINUTES = 2;

describe('soak smoke', () => {
  // The soak runs in a process group of its own: on a failure or a timeout here, the group's
  // kill takes its servers and fio runs with it (a kill of the soak alone would orphan them).
  let group: number | null = null;
  afterAll(() => {
    if (group === null) return;
    try {
      process.kill(-group, 'SIGKILL');
    } catch { /* the group has ended */ }
  });

  it(`${MINUTES} minutes of fio --verify, snapshots, rollbacks, clones, diffs, kill -9 and restarts`, async () => {
    requires('fio');
    const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'test', 'soak', 'soak.ts'), '--minutes', String(MINUTES)], {
      cwd: REPO_ROOT, env: { ...process.env, SOAK_KILL_EVERY_MS: '45000' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
    });
    group = child.pid ?? null;
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const line = out.split('\n').find((l) => l.startsWith('soak: '));
    expect(line, out.slice(-3000)).toBeDefined();
    console.log(line);
    const r = JSON.parse(line!.slice('soak: '.length)) as Record<string, number | string>;
    expect(r['errors'], out.slice(-3000)).toBe(0);
    expect(code).toBe(0);
    expect(r['kills']).toBeGreaterThanOrEqual(1);
    expect(r['fioRuns']).toBeGreaterThan(0);
    expect(r['snapshots']).toBeGreaterThan(0);
    expect(r['verifications']).toBeGreaterThanOrEqual(2);
    expect(String(r['check'])).toMatch(/clean/);
  }, (MINUTES + 6) * 60_000);
});
