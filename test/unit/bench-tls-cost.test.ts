// The bench's TLS rows (issue 14): each server's tls-*/psk-* row against its own bridge-* row,
// the same client path in clear, on plain data. Never a speed.
import { describe, expect, it } from 'vitest';
import { WORKLOADS } from '../../bench/lib/config.ts';
import { computeTlsCosts, type Row } from '../../bench/lib/report.ts';

function row(workload: string, peer: Row['peer'], value: number, primary: Row['primary'], error: string | null = null): Row {
  return { workload, peer, cache: 'hot', primary, reps: [], mbps: primary === 'mbps' ? value : 1, iops: primary === 'iops' ? value : 1, latMaxMs: null, note: null, error };
}

describe('bench TLS rows', () => {
  it('has certificate, PSK and clear rows for 1 MiB sequential and 4 KiB random reads and writes, for snapnbd and nbdkit (file and cow)', () => {
    for (const via of ['tls', 'psk', 'bridge']) {
      for (const w of ['seqread-1m', 'seqwrite-1m', 'randread-4k', 'randwrite-4k']) {
        const found = WORKLOADS.find((x) => x.name === `${via}-${w}`);
        expect(found?.via, `${via}-${w}`).toBe(via);
        expect(found?.peers).toEqual(['snapnbd', 'nbdkit-file', 'nbdkit-cow']);
      }
    }
  });

  it('divides each TLS row by the same peer\'s clear row on its primary figure; rows without a clear run or with errors give none', () => {
    const rows = [
      row('tls-randwrite-4k', 'snapnbd', 300, 'iops'), row('psk-randwrite-4k', 'snapnbd', 600, 'iops'),
      row('bridge-randwrite-4k', 'snapnbd', 1200, 'iops'), row('bridge-randwrite-4k', 'nbdkit-file', 1000, 'iops'),
      row('tls-randwrite-4k', 'nbdkit-file', 500, 'iops'), row('psk-seqread-1m', 'nbdkit-file', 50, 'mbps'),
      row('tls-seqread-1m', 'snapnbd', 90, 'mbps'), row('bridge-seqread-1m', 'snapnbd', 100, 'mbps', 'fio failed'),
    ];
    expect(computeTlsCosts(rows).map((c) => [c.workload, c.peer, c.ratio])).toEqual([
      ['tls-randwrite-4k', 'snapnbd', 0.25], ['psk-randwrite-4k', 'snapnbd', 0.5], ['tls-randwrite-4k', 'nbdkit-file', 0.5],
    ]);
  });
});
