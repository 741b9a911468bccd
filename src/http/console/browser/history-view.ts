// The volume's space over time (volume.history), as an SVG chart: one line per figure (used by it
// alone, referenced, written since its last snapshot) with a point per sample, the top value and
// the time span on the axes.
import { chartGeometry, SERIES, type SeriesKey } from './chart.ts';
import { formatSize, formatTime, h, plural, svg } from './dom.ts';
import type { HistoryView } from './model.ts';

const WIDTH = 600;
const HEIGHT = 160;
const LABELS: Record<SeriesKey, string> = { used: 'used', referenced: 'referenced', written: 'written' };

export function historySection(hist: HistoryView | null, error: string | null): Node {
  if (error !== null) return h('p', { class: 'error', role: 'alert' }, error);
  if (hist === null) return h('p', { 'aria-busy': 'true' }, 'Reading the history…');
  if (hist.intervalSeconds === null) return h('p', {}, 'This server keeps no space history.');
  const n = hist.samples.length;
  if (n === 0) return h('p', {}, `No samples yet (one every ${hist.intervalSeconds} s).`);
  const g = chartGeometry(hist.samples, WIDTH, HEIGHT);
  const last = hist.samples[n - 1]!;
  const label = `${plural(n, 'sample')} from ${formatTime(hist.samples[0]!.at)} to ${formatTime(last.at)}; now ${formatSize(last.used)} used, ` +
    `${formatSize(last.referenced)} referenced, ${formatSize(last.written)} written`;
  const chart = svg('svg', { class: 'history', viewBox: `-4 -4 ${WIDTH + 8} ${HEIGHT + 8}`, role: 'img', 'aria-label': label },
    svg('title', {}, label),
    svg('line', { class: 'axis', x1: 0, y1: HEIGHT, x2: WIDTH, y2: HEIGHT }),
    svg('line', { class: 'axis', x1: 0, y1: 0, x2: 0, y2: HEIGHT }));
  for (const k of SERIES) {
    const pts = g.points[k];
    chart.append(svg('polyline', { class: `series series-${k}`, points: pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ') }));
    for (const [x, y] of pts) chart.append(svg('circle', { class: `point series-${k}`, cx: x.toFixed(1), cy: y.toFixed(1), r: 2.5 }));
  }
  return h('figure', { class: 'history' },
    h('div', { class: 'history-top', 'aria-hidden': 'true' }, formatSize(g.top)),
    chart,
    h('div', { class: 'strip-scale', 'aria-hidden': 'true' }, h('span', {}, formatTime(hist.samples[0]!.at)), h('span', {}, formatTime(last.at))),
    h('figcaption', { id: 'history-summary' },
      h('span', { class: 'legend' }, ...SERIES.map((k) => h('span', { class: `key series-${k}` }, LABELS[k]))), ' ', label));
}
