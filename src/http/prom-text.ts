// The Prometheus text exposition format (version 0.0.4), pure: encodeFamilies() writes metric
// families, parseExposition() is its mirror, which tests use to read a scrape back. No I/O.
import type { Histogram } from '../util/histogram.ts';

export const EXPOSITION_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export type Labels = Readonly<Record<string, string>>;

export type MetricFamily =
  | { name: string; help: string; type: 'counter' | 'gauge'; samples: { labels: Labels; value: number }[] }
  | { name: string; help: string; type: 'histogram'; samples: { labels: Labels; histogram: Histogram }[] };

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

export function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

/** The exposition text of these families, in order. Throws on an invalid metric or label name
 *  (a bug in our own tables, never input). */
export function encodeFamilies(families: readonly MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    if (!NAME_RE.test(f.name)) throw new Error(`invalid metric name '${f.name}'`);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    if (f.type !== 'histogram') {
      for (const s of f.samples) {
        checkLabels(s.labels);
        out.push(`${f.name}${labelText(s.labels)} ${formatValue(s.value)}`);
      }
      continue;
    }
    for (const s of f.samples) {
      checkLabels(s.labels);
      const h = s.histogram;
      let cumulative = 0;
      h.bounds.forEach((le, i) => {
        cumulative += h.counts[i]!;
        out.push(`${f.name}_bucket${labelText(s.labels, ['le', formatValue(le)])} ${cumulative}`);
      });
      out.push(`${f.name}_bucket${labelText(s.labels, ['le', '+Inf'])} ${h.count}`);
      out.push(`${f.name}_sum${labelText(s.labels)} ${formatValue(h.sum)}`);
      out.push(`${f.name}_count${labelText(s.labels)} ${h.count}`);
    }
  }
  return out.join('\n') + '\n';
}

function checkLabels(labels: Labels): void {
  for (const k of Object.keys(labels)) if (!LABEL_RE.test(k) || k === 'le') throw new Error(`invalid label name '${k}'`);
}

// ---- the mirror: parse a scrape ----

export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedFamily {
  type: string;
  help: string;
  samples: ParsedSample[];
}

const SAMPLE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL_PAIR_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/y;
const HISTOGRAM_SUFFIX_RE = /_(bucket|sum|count)$/;

function unescape(s: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

function parseValue(s: string): number {
  if (s === '+Inf') return Infinity;
  if (s === '-Inf') return -Infinity;
  if (s === 'NaN') return NaN;
  const v = Number(s);
  if (s.trim() === '' || Number.isNaN(v)) throw new Error(`'${s}' is not a sample value`);
  return v;
}

/** Families by name; a histogram's _bucket, _sum and _count samples go to its family. Throws on
 *  a line that is not a comment, a blank or a sample. */
export function parseExposition(text: string): Map<string, ParsedFamily> {
  const families = new Map<string, ParsedFamily>();
  const family = (name: string): ParsedFamily => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { type: 'untyped', help: '', samples: [] }));
    return f;
  };
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      if (meta[1] === 'HELP') family(meta[2]!).help = unescape(meta[3]!);
      else family(meta[2]!).type = meta[3]!;
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = SAMPLE_RE.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2] !== undefined && m[2] !== '') {
      LABEL_PAIR_RE.lastIndex = 0;
      while (LABEL_PAIR_RE.lastIndex < m[2].length) {
        const p = LABEL_PAIR_RE.exec(m[2]);
        if (!p) throw new Error(`bad labels in: ${line}`);
        labels[p[1]!] = unescape(p[2]!);
      }
    }
    const name = m[1]!;
    const base = name.replace(HISTOGRAM_SUFFIX_RE, '');
    const owner = base !== name && families.get(base)?.type === 'histogram' ? base : name;
    family(owner).samples.push({ name, labels, value: parseValue(m[3]!) });
  }
  return families;
}
