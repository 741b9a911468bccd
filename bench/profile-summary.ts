// Summarises V8 CPU profiles (node --cpu-prof; the harness writes them with --cpu-prof DIR):
// self time and inclusive time per function, top N, so a profile can be read in a terminal and
// quoted in an issue. Usage: node --import tsx bench/profile-summary.ts FILE.cpuprofile... [--top N]
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame { functionName: string; url: string; lineNumber: number; columnNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[]; hitCount?: number }
interface CpuProfile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

const DEFAULT_TOP = 25;

function frameKey(f: CallFrame): string {
  const where = f.url ? `${relative(process.cwd(), f.url.replace(/^file:\/\//, ''))}:${f.lineNumber + 1}` : '';
  return `${f.functionName || '(anonymous)'} ${where}`.trim();
}

export function summarise(p: CpuProfile): { totalMs: number; self: Map<string, number>; inclusive: Map<string, number> } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const node = byId.get(id)!;
    const k = frameKey(node.callFrame);
    self.set(k, (self.get(k) ?? 0) + us / 1000);
    // Inclusive: once per distinct function on the stack (recursion counted once).
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const key = frameKey(byId.get(cur)!.callFrame);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + us / 1000);
    }
  }
  return { totalMs: (p.endTime - p.startTime) / 1000, self, inclusive };
}

function table(title: string, m: Map<string, number>, totalMs: number, top: number): string {
  const rows = [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [`${title}`, ...rows.map(([k, ms]) => `${ms.toFixed(0).padStart(8)} ms ${(100 * ms / totalMs).toFixed(1).padStart(5)}%  ${k}`)].join('\n');
}

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' } } });
  const top = values.top ? Number(values.top) : DEFAULT_TOP;
  for (const file of positionals) {
    const s = summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
    process.stdout.write(`== ${file} (${s.totalMs.toFixed(0)} ms profiled)\n`);
    process.stdout.write(`${table('-- self time', s.self, s.totalMs, top)}\n`);
    process.stdout.write(`${table('-- inclusive time', s.inclusive, s.totalMs, top)}\n\n`);
  }
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) main();
