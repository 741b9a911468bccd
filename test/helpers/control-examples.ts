// Reads the examples out of protocol/control.md and compares answers with them, by the rules
// that file states: some fields vary from run to run and are checked for their JSON type only.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './server.ts';

export type ExampleStep =
  | { kind: 'rpc'; block: number; send: string; expect: string | null }
  | { kind: 'sh'; block: number; command: string };

/** Fields whose values vary by run (protocol/control.md, "Examples"). */
export const VARYING_FIELDS = new Set([
  'created', 'startedAt', 'uptimeSeconds', 'pid', 'listeners', 'referenced', 'used', 'written',
  'allocatedBytes', 'liveBytes', 'freeBytes', 'next', 'detail', 'guid', 'eventLoop',
  // backups and jobs
  'started', 'finished', 'bytesPerSecond', 'etaSeconds', 'source', 'url', 'bytesRead',
  // schedules
  'nextRun', 'lastRun',
]);
/** A backup id (time and random): any such id matches, and later requests get the real one. */
const BACKUP_ID = /^\d{8}T\d{9}Z-[0-9a-f]{8}$/;
VARYING_FIELDS.add('at'); // a volume.history sample's time (said in that example's text)

/** Replaces documented backup ids in a request line by those the server really gave. */
export function rewriteIds(line: string, ids: Map<string, string>): string {
  let out = line;
  for (const [doc, real] of ids) out = out.replaceAll(doc, real);
  return out;
}
const GENERATED_NAME = /^([A-Za-z0-9_][A-Za-z0-9._-]*)-\d{8}T\d{6}Z$/;

/** The placeholder for the replay server's data dir in the examples (a path without JSON specials). */
export const DATA_DIR_PLACEHOLDER = 'DATA_DIR';

/** The examples in order; `dataDir` replaces DATA_DIR_PLACEHOLDER everywhere when given. */
export function readExamples(path = join(REPO_ROOT, 'protocol', 'control.md'), dataDir?: string): ExampleStep[] {
  let md = readFileSync(path, 'utf8');
  if (dataDir !== undefined) md = md.replaceAll(DATA_DIR_PLACEHOLDER, dataDir);
  const steps: ExampleStep[] = [];
  const fence = /^```([^\n]*)\n([\s\S]*?)^```\s*$/gm;
  let m: RegExpExecArray | null;
  let block = 0;
  while ((m = fence.exec(md)) !== null) {
    const info = m[1]!.trim();
    const body = m[2]!;
    if (info === 'jsonrpc') {
      block++;
      for (const line of body.split('\n')) {
        if (line.startsWith('--> ')) steps.push({ kind: 'rpc', block, send: line.slice(4), expect: null });
        else if (line.startsWith('<-- ')) {
          const last = steps[steps.length - 1];
          if (!last || last.kind !== 'rpc' || last.expect !== null) throw new Error(`control.md block ${block}: answer without a request: ${line}`);
          last.expect = line.slice(4);
        } else if (line.trim() !== '') throw new Error(`control.md block ${block}: line is neither --> nor <--: ${line}`);
      }
    } else if (info === 'sh replay') {
      block++;
      for (const line of body.split('\n')) if (line.trim() !== '') steps.push({ kind: 'sh', block, command: line });
    }
  }
  return steps;
}

function jsonType(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** Differences between an expected and an actual answer, by the doc's rules ([] = equal). */
export function compareAnswer(expected: unknown, actual: unknown, path = '$', ids: Map<string, string> = new Map()): string[] {
  const key = path.slice(path.lastIndexOf('.') + 1);
  if (typeof expected === 'string' && BACKUP_ID.test(expected)) {
    if (typeof actual !== 'string' || !BACKUP_ID.test(actual)) return [`${path}: expected a backup id, got ${JSON.stringify(actual)}`];
    const known = ids.get(expected);
    if (known !== undefined && known !== actual) return [`${path}: expected the backup id given earlier (${known}), got ${actual}`];
    ids.set(expected, actual);
    return [];
  }
  if (VARYING_FIELDS.has(key) || path.endsWith('.error.message')) {
    return jsonType(expected) === jsonType(actual) ? [] : [`${path}: expected a ${jsonType(expected)}, got ${JSON.stringify(actual)}`];
  }
  if (typeof expected === 'string' && GENERATED_NAME.test(expected)) {
    const prefix = GENERATED_NAME.exec(expected)![1];
    const got = typeof actual === 'string' ? GENERATED_NAME.exec(actual) : null;
    return got && got[1] === prefix ? [] : [`${path}: expected a generated name ${prefix}-YYYYMMDDTHHMMSSZ, got ${JSON.stringify(actual)}`];
  }
  if (jsonType(expected) !== jsonType(actual)) return [`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`];
  if (Array.isArray(expected)) {
    const a = actual as unknown[];
    if (a.length !== expected.length) return [`${path}: expected ${expected.length} elements, got ${a.length}: ${JSON.stringify(actual)}`];
    return expected.flatMap((e, i) => compareAnswer(e, a[i], `${path}[${i}]`, ids));
  }
  if (expected !== null && typeof expected === 'object') {
    const e = expected as Record<string, unknown>;
    const a = actual as Record<string, unknown>;
    const keys = new Set([...Object.keys(e), ...Object.keys(a)]);
    const out: string[] = [];
    for (const k of keys) {
      if (!Object.hasOwn(a, k)) out.push(`${path}.${k}: missing`);
      else if (!Object.hasOwn(e, k)) out.push(`${path}.${k}: not in the documented answer (${JSON.stringify(a[k])})`);
      else out.push(...compareAnswer(e[k], a[k], `${path}.${k}`, ids));
    }
    return out;
  }
  return expected === actual ? [] : [`${path}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`];
}
