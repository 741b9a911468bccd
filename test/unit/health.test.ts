// server.health's checks over a real temporary directory: a failed scheduled or backup run
// degrades until the next run of that operation succeeds; manual snapshot failures do not count.
import { describe, expect, it } from 'vitest';
import { checkHealth } from '../../src/control/health.ts';
import { OperationMetrics } from '../../src/util/operation-metrics.ts';
import { tempDir } from '../helpers/server.ts';

describe('checkHealth', () => {
  it('degrades on the last failed schedule or backup run, and recovers when it next succeeds', async () => {
    const operations = new OperationMetrics();
    const src = { dataDir: tempDir(), operations };
    operations.observe('snapshot_create', 0.1, 'NO_SPACE'); // a manual one: not a monitored run
    expect((await checkHealth(src, 0)).status).toBe('ok');
    operations.observe('schedule_run', 0.1, 'volume v is gone');
    operations.observe('backup_run', 0.1, null);
    const bad = await checkHealth(src, 0);
    expect(bad.status).toBe('degraded');
    expect(bad.checks.find((c) => c.name === 'last_runs')).toEqual({ name: 'last_runs', ok: false, detail: 'last run failed: schedule_run: volume v is gone' });
    operations.observe('schedule_run', 0.1, null);
    const good = await checkHealth(src, 0);
    expect(good.status).toBe('ok');
    expect(good.checks.find((c) => c.name === 'last_runs')!.detail).toBe('the last run of 2 operation(s) succeeded');
  });
});
