// The Prometheus text encoder and its mirror parser, the histogram, and the per-export request
// figures: label values from fixed tables only, so a hostile client cannot add series.
import { describe, expect, it } from 'vitest';
import { encodeFamilies, parseExposition } from '../../src/http/prom-text.ts';
import { Cmd, NbdErrno } from '../../src/protocol/constants.ts';
import { COMMAND_LABELS, RequestMetrics } from '../../src/server/request-metrics.ts';
import { Histogram } from '../../src/util/histogram.ts';

describe('Prometheus text format', () => {
  it('writes HELP, TYPE and samples, escaping label values and help, and parses back', () => {
    const text = encodeFamilies([
      { name: 'a_total', help: 'line one\nback\\slash', type: 'counter', samples: [{ labels: { x: 'q"uo\\te\nnl' }, value: 3 }] },
      { name: 'b_bytes', help: 'g', type: 'gauge', samples: [{ labels: {}, value: NaN }, { labels: { k: 'v' }, value: 1.5e-7 }] },
    ]);
    expect(text).toBe([
      '# HELP a_total line one\\nback\\\\slash', '# TYPE a_total counter', 'a_total{x="q\\"uo\\\\te\\nnl"} 3',
      '# HELP b_bytes g', '# TYPE b_bytes gauge', 'b_bytes NaN', 'b_bytes{k="v"} 1.5e-7', '',
    ].join('\n'));
    const back = parseExposition(text);
    expect(back.get('a_total')).toEqual({ type: 'counter', help: 'line one\nback\\slash', samples: [{ name: 'a_total', labels: { x: 'q"uo\\te\nnl' }, value: 3 }] });
    expect(back.get('b_bytes')!.samples[1]).toEqual({ name: 'b_bytes', labels: { k: 'v' }, value: 1.5e-7 });
  });

  it('writes histograms with cumulative buckets, +Inf, _sum and _count', () => {
    const h = new Histogram([0.1, 1]);
    for (const v of [0.05, 0.1, 0.5, 7]) h.observe(v);
    const text = encodeFamilies([{ name: 'd_seconds', help: 'h', type: 'histogram', samples: [{ labels: { op: 'x' }, histogram: h }] }]);
    const f = parseExposition(text).get('d_seconds')!;
    expect(f.type).toBe('histogram');
    expect(f.samples.map((s) => [s.name, s.labels.le ?? '', s.value])).toEqual([
      ['d_seconds_bucket', '0.1', 2], ['d_seconds_bucket', '1', 3], ['d_seconds_bucket', '+Inf', 4],
      ['d_seconds_sum', '', 7.65], ['d_seconds_count', '', 4],
    ]);
  });

  it('refuses invalid metric and label names (our own bug, caught before a scraper sees it)', () => {
    expect(() => encodeFamilies([{ name: 'bad-name', help: '', type: 'gauge', samples: [] }])).toThrow(/metric name/);
    expect(() => encodeFamilies([{ name: 'ok', help: '', type: 'gauge', samples: [{ labels: { 'b-ad': '1' }, value: 1 }] }])).toThrow(/label name/);
  });

  it('the parser refuses a line that is not a sample', () => {
    expect(() => parseExposition('x{a="1" 2\n')).toThrow();
    expect(() => parseExposition('x abc\n')).toThrow();
  });
});

describe('RequestMetrics', () => {
  it('counts by command and errno from fixed tables; unknown codes become "other"', () => {
    const m = new RequestMetrics();
    for (let cmd = 8; cmd < 1000; cmd++) m.finish('v', cmd, 0, 9999, m.start('v'));
    m.finish('v', Cmd.WRITE, 4096, NbdErrno.OK, m.start('v'));
    m.finish('v', Cmd.WRITE, 4096, NbdErrno.ENOSPC, m.start('v'));
    m.finish('v', Cmd.FLUSH, 0, NbdErrno.OK, m.start('v'));
    const f = m.exports().get('v')!;
    expect(f.inFlight).toBe(0);
    const other = f.commands[COMMAND_LABELS.indexOf('other')]!;
    expect(other.requests).toBe(992);
    expect([...other.errors]).toEqual([['other', 992]]);
    const write = f.commands[Cmd.WRITE]!;
    expect(write).toMatchObject({ requests: 2, bytes: 4096 });
    expect([...write.errors]).toEqual([['ENOSPC', 1]]);
    expect(write.latency.count).toBe(2);
    expect(f.commands[Cmd.FLUSH]!.bytes).toBe(0);
  });

  it('forgets exports that are gone, unless a request is still in flight there', () => {
    const m = new RequestMetrics();
    m.finish('a', Cmd.READ, 1, NbdErrno.OK, m.start('a'));
    m.start('b');
    m.retainOnly(new Set(['c']));
    expect([...m.exports().keys()]).toEqual(['b']);
  });
});
