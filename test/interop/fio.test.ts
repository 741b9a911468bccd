// fio --ioengine=nbd with crc32c verification: random read/write with a block size mix, a
// sequential write then verify, a verify-only pass over earlier data, and a corrupted block that
// verification must catch (so a passing verify means something).
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { PEER_KINDS, withPeers } from '../helpers/peers.ts';
import { tempDir } from '../helpers/server.ts';
import { mustRun, tool, type ToolResult } from './tool.ts';

const MiB = 2 ** 20;
/** Each job's region: big enough for every block size in the mix many times over. */
const REGION = 24 * MiB;

interface FioJob { jobname: string; error: number; read: { io_bytes: number }; write: { io_bytes: number } }

async function fio(uri: string, dir: string, name: string, opts: string[]): Promise<{ run: ToolResult; jobs: FioJob[]; report: string }> {
  const out = join(dir, `${name}.json`);
  const run = await tool('fio', [
    `--name=${name}`, '--ioengine=nbd', `--uri=${uri}`, '--verify=crc32c', '--verify_fatal=1',
    '--exitall_on_error', '--iodepth=16', '--output-format=json', `--output=${out}`, ...opts,
  ]);
  let jobs: FioJob[] = [];
  let report = '';
  try {
    // fio appends its verify complaints to the report file after the JSON document.
    report = readFileSync(out, 'utf8');
    jobs = (JSON.parse(report.slice(report.indexOf('{'), report.lastIndexOf('}') + 1)) as { jobs: FioJob[] }).jobs;
  } catch { /* no report: the assertions below show fio's own words */ }
  return { run, jobs, report };
}

function passed(r: { run: ToolResult; jobs: FioJob[]; report: string }): void {
  const detail = `fio exit ${r.run.code}\n${r.run.stdout}\n${r.run.stderr}`;
  expect(r.run.code, detail).toBe(0);
  expect(r.jobs.length, detail).toBe(1);
  expect(r.jobs[0]!.error, detail).toBe(0);
}

describe('fio over NBD with crc32c verify', () => {
  it.each(PEER_KINDS)('random and sequential mixes verify, and a corrupted block is caught (%s)', async (kind) => {
    requires('fio', 'qemu-io', 'nbdkit');
    const dir = tempDir('snapnbd-fio-');
    try {
      await withPeers([kind], async (uri) => {
        const seq = await fio(uri, dir, 'seq-write-verify', ['--rw=write', '--bs=64k', `--size=${REGION}`, '--offset=0', '--do_verify=1']);
        passed(seq);
        expect(seq.jobs[0]!.write.io_bytes).toBe(REGION);
        expect(seq.jobs[0]!.read.io_bytes).toBe(REGION); // the verify pass read everything back

        const mix = await fio(uri, dir, 'randrw-bs-mix', [
          '--rw=randrw', '--bssplit=512/10:4k/40:16k/20:64k/20:1m/10', `--size=${REGION}`, `--offset=${REGION}`,
          '--do_verify=1', '--randrepeat=0',
        ]);
        passed(mix);
        expect(mix.jobs[0]!.write.io_bytes).toBeGreaterThan(0);

        const seqMix = await fio(uri, dir, 'seq-bs-mix', [
          '--rw=write', '--bsrange=4k-256k', '--bs_unaligned=0', `--size=${REGION}`, `--offset=${2 * REGION}`, '--do_verify=1',
        ]);
        passed(seqMix);

        // The first region again, verify only: the data is still there after the other jobs.
        const again = await fio(uri, dir, 'seq-verify-only', ['--rw=write', '--bs=64k', `--size=${REGION}`, '--offset=0', '--verify_only']);
        passed(again);
        expect(again.jobs[0]!.read.io_bytes).toBe(REGION);

        // One flipped byte inside a block: verification must fail.
        await mustRun('qemu-io', ['-f', 'raw', '-c', `write -P 0x99 ${5 * MiB + 1000} 1`, uri]);
        const broken = await fio(uri, dir, 'seq-verify-corrupt', ['--rw=write', '--bs=64k', `--size=${REGION}`, '--offset=0', '--verify_only']);
        const said = `${broken.run.stdout}${broken.run.stderr}${broken.report}`;
        expect(broken.run.code, said).not.toBe(0);
        expect(broken.jobs[0]?.error, said).toBe(84); // EILSEQ: fio's verify failure
        expect(said).toContain('crc32c: verify failed');
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
