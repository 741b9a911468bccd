// What `snapnbd --version` and the control socket's server.info report: the package version (from
// package.json, its one definition) and the commit the running code was built from, which
// `npm run build` records in dist/build-info.json. Both files are found from the package root,
// which is two levels up from both src/cli/ and dist/cli/.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = fileURLToPath(import.meta.url);
const ROOT = join(dirname(HERE), '..', '..');

export const VERSION: string = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

export interface BuildInfo { version: string; commit: string; dirty: boolean; builtAt: string | null }

/** The build this process runs: dist/build-info.json, or for the TypeScript sources (tsx), the
 *  checkout's current commit. */
export function buildInfo(): BuildInfo {
  if (HERE.endsWith('.ts')) {
    const git = (...args: string[]): string => execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    try {
      return { version: VERSION, commit: git('rev-parse', 'HEAD'), dirty: git('status', '--porcelain', '--untracked-files=no') !== '', builtAt: null };
    } catch {
      return { version: VERSION, commit: 'unknown', dirty: false, builtAt: null };
    }
  }
  try {
    return JSON.parse(readFileSync(join(ROOT, 'dist', 'build-info.json'), 'utf8')) as BuildInfo;
  } catch {
    return { version: VERSION, commit: 'unknown', dirty: false, builtAt: null };
  }
}

/** `snapnbd 0.1.0 (commit 52bfdf4..., built 2026-11-30T07:40:00.000Z)` */
export function versionLine(): string {
  const b = buildInfo();
  const commit = `commit ${b.commit}${b.dirty ? ' with local changes' : ''}`;
  return `snapnbd ${b.version} (${commit}${b.builtAt ? `, built ${b.builtAt}` : ', from sources'})`;
}
