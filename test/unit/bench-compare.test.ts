// The bench harness's build comparison (--compare) and its CPU-per-GiB figure, on plain data:
// the option parses, the other build's row gets its ratio like any peer, the report shows its
// column only when it ran, and the server CPU reading comes from /proc. Never a speed.
import { describe, expect, it } from 'vitest';
import { BASE_PEER, parseOptions } from '../../bench/lib/config.ts';
import type { Measured } from '../../bench/lib/clients.ts';
import { processCpuSeconds, type MachineInfo } from '../../bench/lib/machine.ts';
import { computeRatios, markdown, type BenchResult, type Row } from '../../bench/lib/report.ts';

function row(peer: Row['peer'], mbps: number): Row {
  const m: Measured = { mbps, iops: mbps, latMaxMs: null, latP99Ms: null, seconds: 1, bytes: mbps * 1e6, serverCpuS: 0.5 };
  return { workload: 'seqread-1m', peer, cache: 'hot', primary: 'mbps', reps: [m], mbps, iops: mbps, latMaxMs: null, cpuMsPerGiB: 500, note: null, error: null };
}

const machine: MachineInfo = {
  commit: '0'.repeat(40), dirty: false, node: 'v20', fio: 'fio', nbdkit: 'nbdkit', qemu: 'qemu', nbdcopy: 'nbdcopy',
  cpu: 'cpu', cpus: 2, memGiB: 4, kernel: 'k', uvThreadpoolSize: 'default (4)',
};

function result(rows: Row[]): BenchResult {
  return { schema: 1, date: 'd', mode: 'quick', settings: {}, machine, snapnbdEnv: {}, durationS: 1, rows, ratios: computeRatios(rows), scenarios: [], targets: [] };
}

describe('bench --compare', () => {
  it('parses --compare into compareBin; absent, there is none', () => {
    const with_ = parseOptions(['--quick', '--compare', '/x/bin/snapnbd']);
    const without = parseOptions(['--quick']);
    expect(with_ !== 'help' && with_.compareBin).toBe('/x/bin/snapnbd');
    expect(without !== 'help' && without.compareBin).toBeNull();
  });

  it('the other build gets the ratio snapnbd / snapnbd-base, and a report column only when it ran', () => {
    const rows = [row('snapnbd', 300), row(BASE_PEER, 200), row('nbdkit-file', 600)];
    const ratios = computeRatios(rows);
    expect(ratios.find((r) => r.peer === BASE_PEER)?.ratio).toBe(1.5);
    expect(ratios.find((r) => r.peer === 'nbdkit-file')?.ratio).toBe(0.5);
    const header = (md: string): string | undefined => md.split('\n').find((l) => l.startsWith('| workload | ') && !l.includes('| peer |'));
    expect(header(markdown(result(rows)))).toBe('| workload | snapnbd-base | nbdkit-file |');
    expect(header(markdown(result(rows.filter((r) => r.peer !== BASE_PEER))))).toBe('| workload | nbdkit-file |');
    expect(markdown(result(rows))).toContain('| seqread-1m | snapnbd-base | 200.0 | 200 | 500 | 1.50× |');
  });

  it('reads a live process CPU time (user + system) from /proc; none for a process that is gone', () => {
    const t0 = processCpuSeconds(process.pid);
    // Spin until Node itself counts 200 ms more user time; /proc must show (nearly) as much.
    const u0 = process.cpuUsage().user;
    let x = 0;
    // Pure arithmetic between the checks: user time, hardly any system time.
    while (process.cpuUsage().user - u0 < 200_000) for (let i = 0; i < 1_000_000; i++) x = (x + i) % 1_000_003;
    const t1 = processCpuSeconds(process.pid);
    expect(x).toBeGreaterThanOrEqual(0);
    expect(t0).not.toBeNull();
    expect(t1! - t0!).toBeGreaterThanOrEqual(0.15);
    expect(processCpuSeconds(2 ** 30)).toBeNull();
  });
});
