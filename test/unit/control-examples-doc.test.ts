// protocol/control.md's examples are well formed: every method has an example, every request
// line is JSON-RPC that our own validation accepts or documents as an error, and the answers
// parse. (The integration test replays them against the real server.)
import { describe, expect, it } from 'vitest';
import { METHODS } from '../../src/control/methods.ts';
import { rmSync } from 'node:fs';
import { compareAnswer, readExamples, rewriteIds } from '../helpers/control-examples.ts';
import { BackupManager } from '../../src/backup/manager.ts';
import { Scheduler } from '../../src/schedule/scheduler.ts';
import { parseTargetUrl } from '../../src/backup/target.ts';
import { tempDir } from '../helpers/server.ts';
import { answerFrame } from '../../src/control/server.ts';
import { VolumeRegistry } from '../../src/volumes/registry.ts';
import { FakeStore } from '../helpers/control-fake-store.ts';
import { parseSize } from '../../src/util/size.ts';
import { OperationMetrics } from '../../src/util/operation-metrics.ts';
import { HISTORY_INTERVAL_DEFAULT_S, SpaceHistory } from '../../src/volumes/space-history.ts';

describe('protocol/control.md examples', () => {
  const steps = readExamples();

  it('covers every method with a request and a successful answer', () => {
    const answered = new Set<string>();
    for (const s of steps) {
      if (s.kind !== 'rpc' || s.expect === null) continue;
      let req: { method?: string };
      try { req = JSON.parse(s.send) as { method?: string }; } catch { continue; }
      const ans = JSON.parse(s.expect) as { result?: unknown };
      if (req.method && ans.result !== undefined) answered.add(req.method);
    }
    expect([...answered].sort()).toEqual(Object.keys(METHODS).sort());
  });

  it('has answers that are JSON and ids that match', () => {
    for (const s of steps) {
      if (s.kind !== 'rpc' || s.expect === null) continue;
      const ans = JSON.parse(s.expect) as { id?: unknown } | { id?: unknown }[];
      let req: unknown = null;
      try { req = JSON.parse(s.send); } catch { /* the parse-error example */ }
      if (Array.isArray(ans)) expect(ans.map((a) => a.id)).toEqual((req as { id?: unknown }[]).filter((r) => 'id' in r).map((r) => r.id));
      else if (req !== null && typeof req === 'object' && !Array.isArray(req) && 'method' in req) expect(ans.id).toEqual((req as { id?: unknown }).id);
    }
  });

  it('compares by the documented rules', () => {
    expect(compareAnswer({ a: 1, created: 'x', used: 5 }, { a: 1, created: 'y', used: 9 })).toEqual([]);
    expect(compareAnswer({ a: 1 }, { a: 2 })).toEqual(['$.a: expected 1, got 2']);
    expect(compareAnswer({ used: 5 }, { used: '5' })).toHaveLength(1);
    expect(compareAnswer({ a: 1 }, { a: 1, b: 2 })).toHaveLength(1);
    expect(compareAnswer({ name: 'vm1-20261122T101504Z' }, { name: 'vm1-20270101T000000Z' })).toEqual([]);
    expect(compareAnswer({ name: 'vm1-20261122T101504Z' }, { name: 'vm2-20270101T000000Z' })).toHaveLength(1);
    expect(compareAnswer({ next: '8' }, { next: null })).toHaveLength(1);
  });
});

// The same replay the integration test does, against the in-memory store: catches drift
// between the doc and the control layer without the engine. qemu-io writes are applied to the
// fake head directly.

describe('protocol/control.md examples against the in-memory store', () => {
  it('replays every block with the documented answers', async () => {
    const store = new FakeStore();
    const registry = new VolumeRegistry(store, { defaultExport: 'vm1', readOnly: false });
    await registry.createVolume({ name: 'vm1', size: 64 * 1024 * 1024 });
    // As serve does: a history sampled at start (only vm1 exists then).
    const history = new SpaceHistory({ dataDir: tempDir('snapnbd-docs-history-'), intervalSeconds: HISTORY_INTERVAL_DEFAULT_S, figures: () => registry.listVolumes() });
    history.sample();
    const backupDir = tempDir('snapnbd-docs-target-');
    const backups = new BackupManager({ store, registry, targets: new Map([['docs', parseTargetUrl(`file://${backupDir}`)]]) });
    const schedules = new Scheduler({ dataDir: tempDir('snapnbd-docs-schedules-'), registry, backups });
    const ctx = {
      history,
      registry, backups, serverInfo: () => ({ version: '0.1.0', listeners: ['nbd 127.0.0.1:1'], startedAt: new Date() }),
      health: { dataDir: tempDir(), operations: new OperationMetrics() },
      schedules,
    };
    const ids = new Map<string, string>();
    let replayed = 0;
    for (const step of readExamples(undefined, store.dataDir)) {
      if (step.kind === 'sh') {
        const nbd = /nbd:\/\/[^/]+\/(\S+)/.exec(step.command);
        if (!nbd) continue; // preparing a file: the in-memory store never opens it
        const vol = nbd[1]!;
        for (const w of step.command.matchAll(/write -P (0x[0-9a-f]+) (\S+) (\S+)'/g)) {
          const off = parseSize(w[2]!)!;
          const len = parseSize(w[3]!)!;
          await store.head(vol).write(off, Buffer.alloc(len, Number(w[1])), { fua: false });
        }
        continue;
      }
      const got = await answerFrame({ kind: 'line', text: rewriteIds(step.send, ids) }, ctx);
      if (step.expect === null) {
        expect(got, step.send).toBeUndefined();
        continue;
      }
      expect(compareAnswer(JSON.parse(step.expect), JSON.parse(JSON.stringify(got)), '$', ids), step.send).toEqual([]);
      replayed++;
    }
    expect(replayed).toBeGreaterThan(20);
    await schedules.stop();
    await backups.close();
    rmSync(backupDir, { recursive: true, force: true });
  });
});
