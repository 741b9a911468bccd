// `npm run bench -- --kernel-stacks DIR`: the sampler (bench/lib/kernel-stacks.mjs) writes what it
// saw once the server is gone, and the report (bench/lib/kernel-stacks-report.ts) sums blocked
// time per thread and place and finds each thread's waits (consecutive samples at one place).
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kernelStacksSummary, placeOf } from '../../bench/lib/kernel-stacks-report.ts';
import { REPO_ROOT } from '../helpers/server.ts';

const PREAD = 'folio_wait_bit_common < filemap_get_pages < filemap_read < vfs_read < __x64_sys_pread64 < do_syscall_64';
const SYNC = 'submit_bio_wait < blkdev_issue_flush < ext4_sync_file < do_fsync < __x64_sys_fdatasync < do_syscall_64';
const WRITE = '__filemap_get_folio < ext4_da_write_begin < generic_perform_write < vfs_write < __x64_sys_pwrite64';

describe('kernel stacks (bench)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'snapnbd-kstacks-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names a place by its system call and innermost frames', () => {
    expect(placeOf(PREAD)).toBe('pread64: folio_wait_bit_common < filemap_get_pages < filemap_read');
    expect(placeOf('io_schedule < kthread')).toBe('kernel: io_schedule < kthread');
    expect(placeOf('')).toBe('unknown (stack not readable)');
  });

  it('sums blocked time per thread and place within the window, and finds the longest waits', () => {
    const pid = 100;
    // Rounds every 2 ms from t=1000 µs; the window is rounds 1..8 (t 3000..17000).
    const rounds: [number, number][] = [];
    for (let i = 0; i < 10; i++) rounds.push([1000 + i * 2000, 2]);
    const t = (i: number): number => 1000 + i * 2000;
    const blocked: [number, number, number][] = [
      [t(0), 101, 1], // before the window: not counted
      [t(1), 101, 0], [t(2), 101, 0], [t(3), 101, 0], // pool thread 101: one wait of 3 rounds in pread
      [t(4), 101, 2], // then at another place: a new wait
      [t(6), 101, 0], // back in pread: a new wait
      [t(2), 102, 1], [t(3), 102, 1], [t(5), 102, 1], // pool thread 102: fdatasync, 2 rounds, a gap, 1 more
      [t(5), pid, 2], [t(6), pid, 2], // the event loop's thread in pwrite64
      [t(9), pid, 2], // after the window
    ];
    writeFileSync(join(dir, `kernel-stacks-${pid}.json`), JSON.stringify({ pid, sampleMs: 2, rounds, blocked, stacks: [PREAD, SYNC, WRITE] }));
    const s = kernelStacksSummary(dir, pid, t(1), t(8))!;
    expect(s.rounds).toBe(8);
    expect(s.medianGapMs).toBe(2);
    expect(s.stacksRead).toBe(true);
    expect(s.loopBlockedMs).toBe(4);
    expect(s.poolBlockedMs).toBe(16);
    expect(s.places[0]).toEqual({ thread: 'pool', where: placeOf(PREAD), ms: 8 });
    expect(s.places).toContainEqual({ thread: 'pool', where: placeOf(SYNC), ms: 6 });
    expect(s.places).toContainEqual({ thread: 'loop', where: placeOf(WRITE), ms: 4 });
    expect(s.longestWaits[0]).toEqual({ tid: 101, thread: 'pool', where: placeOf(PREAD), ms: 6 });
    expect(s.longestWaits.filter((w) => w.tid === 101).map((w) => w.ms)).toEqual([6, 2, 2]);
    expect(s.longestWaits.filter((w) => w.tid === 102).map((w) => w.ms), 'a round without it ends a wait').toEqual([4, 2]);
    expect(s.places).toContainEqual({ thread: 'pool', where: placeOf(WRITE), ms: 2 });
    expect(s.longestWaits).toContainEqual({ tid: pid, thread: 'loop', where: placeOf(WRITE), ms: 4 });
    expect(kernelStacksSummary(dir, 999, 0, 1), 'no file: no summary').toBeNull();
  });

  it('the sampler writes its file when the process it watches ends', async () => {
    const target = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 400)'], { stdio: 'ignore' });
    const out = join(dir, 'sampled.json');
    const sampler = spawn(process.execPath, [join(REPO_ROOT, 'bench', 'lib', 'kernel-stacks.mjs'), String(target.pid), out], { stdio: 'ignore' });
    const code = await new Promise<number | null>((r) => sampler.once('exit', (c) => r(c)));
    expect(code).toBe(0);
    expect(existsSync(out)).toBe(true);
    const k = JSON.parse(readFileSync(out, 'utf8')) as { pid: number; rounds: [number, number][]; blocked: unknown[]; stacks: string[] };
    expect(k.pid).toBe(target.pid);
    expect(k.rounds.length, 'sampled while the process lived').toBeGreaterThan(10);
    expect(Array.isArray(k.blocked)).toBe(true);
  });
});
