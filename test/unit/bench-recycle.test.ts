// The bench harness's memory recycling before write runs and its per-run CPU split, on this
// machine's /proc: the scratch file is written in full and gone afterwards, --no-recycle turns
// it off, and the user/system/fault split reads the right /proc/PID/stat fields. Never a speed.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseOptions } from '../../bench/lib/config.ts';
import { processCpuSeconds, processTimes, recycleFreeMemory } from '../../bench/lib/machine.ts';

const dir = mkdtempSync(join(tmpdir(), 'bench-recycle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Bytes this process has passed to write syscalls so far (/proc/self/io wchar). */
function wchar(): number {
  return Number(/^wchar: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))?.[1]);
}

describe('bench recycleFreeMemory', () => {
  it('writes the whole scratch file through the page cache and leaves nothing behind', () => {
    const bytes = 24 * 2 ** 20 + 4096;
    const before = wchar();
    recycleFreeMemory(dir, bytes);
    expect(wchar() - before).toBeGreaterThanOrEqual(bytes);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('is on by default; --no-recycle turns it off', () => {
    const on = parseOptions(['--quick']);
    const off = parseOptions(['--quick', '--no-recycle']);
    expect(on !== 'help' && on.noRecycle).toBe(false);
    expect(off !== 'help' && off.noRecycle).toBe(true);
  });
});

describe('bench processTimes', () => {
  it('splits the CPU time processCpuSeconds reports and counts the faults of fresh memory', () => {
    const t0 = processTimes(process.pid)!;
    // 64 MiB of fresh anonymous memory touched page by page: thousands of minor faults.
    const b = Buffer.allocUnsafeSlow(64 * 2 ** 20);
    for (let i = 0; i < b.length; i += 4096) b[i] = 1;
    const t1 = processTimes(process.pid)!;
    const cpu = processCpuSeconds(process.pid)!;
    expect(t1.minflt - t0.minflt).toBeGreaterThan(4096);
    expect(t1.majflt).toBeGreaterThanOrEqual(0);
    expect(t1.user).toBeGreaterThan(0);
    expect(t1.sys).toBeGreaterThan(0);
    // Read a moment apart: the sum may only have grown since.
    expect(cpu).toBeGreaterThanOrEqual(t1.user + t1.sys - 1e-9);
    expect(cpu - (t1.user + t1.sys)).toBeLessThan(0.5);
    expect(processTimes(2 ** 30)).toBeNull();
  });
});
