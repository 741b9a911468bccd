// The benchmark harness must not rot: run it in --smoke mode (about a second per workload, one
// repetition, small image) and check that the JSON result holds every workload for every peer
// and every snapshot scenario, with positive numbers. Behaviour only: no speed is asserted.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PEERS, SCENARIOS, WORKLOADS } from '../../bench/lib/config.ts';
import type { BenchResult } from '../../bench/lib/report.ts';
import { REPO_ROOT } from '../helpers/server.ts';
import { requires } from '../helpers/requires.ts';

const SMOKE_TIMEOUT_MS = 8 * 60_000;

describe('bench harness --smoke', () => {
  const dir = mkdtempSync(join(tmpdir(), 'snapnbd-bench-smoke-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('produces every workload × peer row and every scenario with positive numbers', async () => {
    requires('fio', 'nbdcopy', 'nbdinfo', 'nbdkit', 'qemu-nbd', 'qemu-img', 'openssl');
    const out = join(dir, 'result.json');
    // --kernel-stacks: the sampler runs beside every snapnbd server; write-stall sums it per phase.
    const stacksDir = join(dir, 'kernel-stacks');
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--smoke', '--out', out, '--tmp', dir, '--kernel-stacks', stacksDir], {
      cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGINT'), SMOKE_TIMEOUT_MS - 30_000);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    clearTimeout(timer);
    expect(code, stderr.slice(-3000)).toBe(0);
    expect(existsSync(out)).toBe(true);
    const res = JSON.parse(readFileSync(out, 'utf8')) as BenchResult;

    expect(res.mode).toBe('smoke');
    expect(res.machine.commit).toMatch(/^[0-9a-f]{40}$/);
    // Which build ran as snapnbd: this checkout's entry point and commit (no --compare: no base).
    expect(res.machine.snapnbd).toEqual({ bin: join(REPO_ROOT, 'bin', 'snapnbd'), commit: res.machine.commit, dirty: res.machine.dirty });
    expect(res.machine.base).toBeNull();
    expect(res.machine.node).toBe(process.version);
    for (const k of ['fio', 'nbdkit', 'qemu', 'nbdcopy', 'cpu', 'kernel'] as const) expect(res.machine[k]).not.toBe('unknown');

    const errors = res.rows.filter((r) => r.error).map((r) => `${r.workload}/${r.peer}: ${r.error!.split('\n')[0]}`);
    expect(errors).toEqual([]);
    for (const w of WORKLOADS) {
      for (const p of w.peers ?? PEERS) {
        const row = res.rows.find((r) => r.workload === w.name && r.peer === p && r.cache === 'hot');
        expect(row, `${w.name}/${p}`).toBeDefined();
        expect(row!.reps.length, `${w.name}/${p}`).toBe(1);
        expect(row!.mbps, `${w.name}/${p} MB/s`).toBeGreaterThan(0);
        if (w.client === 'fio') expect(row!.iops, `${w.name}/${p} IOPS`).toBeGreaterThan(0);
        // The server's CPU split (user, system, faults) is read for every run of every peer.
        expect(row!.reps[0]!.serverSplit?.minorFaultsPerGiB, `${w.name}/${p} faults`).toBeGreaterThanOrEqual(0);
        if (p !== 'snapnbd') {
          const ratio = res.ratios.find((r) => r.workload === w.name && r.peer === p);
          expect(ratio?.ratio, `${w.name}/${p} ratio`).toBeGreaterThan(0);
        }
      }
    }

    const scenario = (name: string): unknown => {
      const s = res.scenarios.find((x) => x.name === name);
      expect(s, name).toBeDefined();
      expect(s!.error ?? null, name).toBeNull();
      expect(s!.ok, name).toBe(true);
      return s!.data;
    };
    expect(res.scenarios.map((s) => s.name).sort()).toEqual([...SCENARIOS].sort());
    const cells = scenario('snapshot-create') as { volumeBytes: number; writtenBytes: number; create: { count: number; medianMs: number; p99Ms: number }; delete: { count: number } }[];
    expect(cells.map((c) => [c.volumeBytes, c.writtenBytes > 0])).toEqual([[2 ** 30, false], [2 ** 30, true], [2 ** 40, false], [2 ** 40, true]]);
    const settings = res.settings as { snapshotCount: number; memorySnapshots: number };
    for (const c of cells) {
      expect(c.create.count).toBe(settings.snapshotCount);
      expect(c.delete.count).toBe(settings.snapshotCount);
      expect(c.create.medianMs).toBeGreaterThan(0);
      expect(c.create.p99Ms).toBeGreaterThanOrEqual(c.create.medianMs);
    }
    const stall = scenario('write-stall') as { withSnapshots: { maxLatMs: number; snapshots: number; iops: number; bystanderMaxLatMs: number }; withoutSnapshots: { maxLatMs: number; bystanderMaxLatMs: number } };
    expect(stall.withSnapshots.snapshots).toBeGreaterThan(0);
    expect(stall.withSnapshots.maxLatMs).toBeGreaterThan(0);
    expect(stall.withSnapshots.iops).toBeGreaterThan(0);
    expect(stall.withoutSnapshots.maxLatMs).toBeGreaterThan(0);
    // The bystander on the second export ran in both phases.
    expect(stall.withoutSnapshots.bystanderMaxLatMs).toBeGreaterThan(0);
    expect(stall.withSnapshots.bystanderMaxLatMs).toBeGreaterThan(0);
    const stacks = (stall as unknown as { kernelStacks: Record<'withoutSnapshots' | 'withSnapshots', { rounds: number; stacksRead: boolean; places: unknown[] } | null> }).kernelStacks;
    for (const phase of [stacks.withoutSnapshots, stacks.withSnapshots]) {
      expect(phase, 'a kernel-stacks summary for each phase').not.toBeNull();
      expect(phase!.rounds).toBeGreaterThan(100);
      expect(Array.isArray(phase!.places)).toBe(true);
    }
    const del = scenario('snapshot-delete') as { deleteMs: number; allocatedBeforeMiB: number; expectedMiB: number };
    expect(del.deleteMs).toBeGreaterThan(0);
    expect(del.allocatedBeforeMiB).toBeGreaterThanOrEqual(del.expectedMiB);
    const mem = scenario('memory') as { peakRssMiB: number; snapshots: number; startRssMiB: number };
    expect(mem.snapshots).toBe(settings.memorySnapshots);
    expect(mem.peakRssMiB).toBeGreaterThanOrEqual(mem.startRssMiB);
    const cp = scenario('control-plane') as { rounds: number; fioDuring: { maxLatMs: number; iops: number }; eventLoopMaxMs: number; snapshotList: { count: number; maxMs: number } };
    expect(cp.rounds).toBeGreaterThan(0);
    expect(cp.snapshotList.count).toBe(cp.rounds);
    expect(cp.fioDuring.iops).toBeGreaterThan(0);
    expect(cp.eventLoopMaxMs).toBeGreaterThan(0);
    const cpStacks = (cp as unknown as { kernelStacks?: Record<'fioAlone' | 'duringLoop', { rounds: number } | null> }).kernelStacks;
    expect(cpStacks?.fioAlone?.rounds, 'control-plane: kernel stacks with fio alone').toBeGreaterThan(100);
    expect(cpStacks?.duringLoop?.rounds, 'control-plane: kernel stacks during the loop').toBeGreaterThan(100);
    const full = scenario('memory-full') as { chunks: number; volumeBytes: number; snapshots: number; peakRssMiB: number; openedRssMiB: number };
    expect(full.chunks).toBe(full.volumeBytes / 65536);
    expect(full.peakRssMiB).toBeGreaterThanOrEqual(full.openedRssMiB);

    // The table names every workload, and the harness left nothing behind in its temp dir.
    for (const w of WORKLOADS) expect(stdout).toContain(`| ${w.name} |`);
    expect(readdirSync(dir).filter((f) => f.startsWith('snapnbd-bench-'))).toEqual([]);
  }, SMOKE_TIMEOUT_MS);
});
