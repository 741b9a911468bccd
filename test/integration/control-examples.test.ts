// Every example in protocol/control.md, replayed in order against the real server, with the
// comparison rules that file states (varying fields checked for type only).
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { compareAnswer, readExamples, rewriteIds } from '../helpers/control-examples.ts';
import { rawControl, type RawControl } from '../helpers/control-raw.ts';
import { requires } from '../helpers/requires.ts';
import { startServer, tempDir, type RunningServer } from '../helpers/server.ts';

describe('protocol/control.md examples, replayed', () => {
  let server: RunningServer;
  let ctl: RawControl;
  const backupDir = tempDir('snapnbd-docs-target-');

  beforeAll(async () => {
    requires('qemu-io');
    server = await startServer({ args: ['--volume', 'vm1=64M', '--default-export', 'vm1', '--backup-target', `docs=file://${backupDir}`] });
    ctl = await rawControl(server.controlPath);
  });
  afterAll(async () => {
    ctl?.close();
    await server?.stop();
    rmSync(backupDir, { recursive: true, force: true });
  });

  it('answers every example as documented', async () => {
    const steps = readExamples(undefined, server.dataDir);
    expect(steps.length).toBeGreaterThan(25);
    const ids = new Map<string, string>();
    for (const step of steps) {
      if (step.kind === 'sh') {
        const cmd = step.command.replaceAll('nbd://127.0.0.1:10809/', server.uri());
        execFileSync('sh', ['-c', cmd], { stdio: 'pipe', timeout: 60_000 });
        continue;
      }
      const before = ctl.lines.length;
      ctl.send(`${rewriteIds(step.send, ids)}\n`);
      if (step.expect === null) {
        // A notification: nothing comes back. Prove it by a marker call answered next.
        ctl.send('{"jsonrpc":"2.0","id":"marker","method":"server.info"}\n');
        const marker = (await ctl.next()) as { id?: unknown };
        expect(marker.id, `after notification ${step.send}`).toBe('marker');
        expect(ctl.lines.length).toBe(before + 1);
        continue;
      }
      const got = await ctl.next();
      const diffs = compareAnswer(JSON.parse(step.expect), got, '$', ids);
      expect(diffs, `block ${step.block}: ${step.send}\n got ${JSON.stringify(got)}`).toEqual([]);
    }
  });
});
