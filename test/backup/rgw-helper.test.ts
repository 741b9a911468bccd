// The Ceph test cluster itself: it serves S3 to an independent client (the AWS CLI), and stop()
// leaves no daemon behind.
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startRgw } from '../helpers/rgw.ts';

describe('Ceph RGW test helper', () => {
  it('starts, stores an object the AWS CLI reads back, and stops every daemon', async () => {
    const t0 = Date.now();
    const rgw = await startRgw();
    const startMs = Date.now() - t0;
    try {
      await rgw.makeBucket('helper-check');
      const f = join(rgw.dir, 'obj');
      writeFileSync(f, 'hello rgw\n');
      await rgw.aws(['s3', 'cp', '--only-show-errors', f, 's3://helper-check/a/obj']);
      expect(await rgw.aws(['s3', 'ls', 's3://helper-check/a/'])).toMatch(/ 10 obj\n/);
      expect(await rgw.aws(['s3', 'cp', '--only-show-errors', 's3://helper-check/a/obj', '-'])).toBe('hello rgw\n');
    } finally {
      await rgw.stop();
    }
    expect(existsSync(rgw.dir)).toBe(false);
    const left = execFileSync('sh', ['-c', `pgrep -f '${rgw.dir}/[c]eph.conf' || true`], { encoding: 'utf8' });
    expect(left.trim()).toBe('');
    console.log(`rgw up in ${startMs} ms`);
  });
});
