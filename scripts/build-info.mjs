// Runs after tsc (`npm run build`): records in dist/build-info.json the package version and the git
// commit the build was made from ("dirty" when tracked files differ from it), which
// `snapnbd --version` prints. Its mtime also tells bin/snapnbd that dist/ is newer than the sources.
// Outside a git checkout (a build from an unpacked tarball) the commit is "unknown".
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const git = (...args) => execFileSync('git', ['-C', root, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();

let commit = 'unknown';
let dirty = false;
try {
  commit = git('rev-parse', 'HEAD');
  dirty = git('status', '--porcelain', '--untracked-files=no') !== '';
} catch {
  // not a git checkout, or no git: the version alone identifies the build
}
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const info = { version, commit, dirty, builtAt: new Date().toISOString() };
writeFileSync(join(root, 'dist', 'build-info.json'), JSON.stringify(info, null, 2) + '\n');
