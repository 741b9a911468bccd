// `npm run prepare` (npm ci, npm pack, npm install -g . from a clone): makes sure the build tools
// are present, then npm runs the build. npm installs a folder with `npm install -g .` as a link and
// runs its `prepare` script without installing its devDependencies, so on a fresh clone tsc is
// missing: then install them exactly as package-lock.json pins them (`npm ci --ignore-scripts`)
// in a clean npm environment, since the global install's settings (npm_config_global,
// npm_config_prefix...) would otherwise make that nested npm install globally too.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
if (!existsSync(join(root, 'node_modules', 'typescript', 'bin', 'tsc'))) {
  // Keep only what says where npm's cache and the user's settings (registry, proxy) live.
  const KEEP = new Set(['npm_config_cache', 'npm_config_userconfig', 'npm_config_registry']);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_config_') || KEEP.has(k.toLowerCase())));
  const npmCli = process.env.npm_execpath;
  const [cmd, pre] = npmCli ? [process.execPath, [npmCli]] : ['npm', []];
  console.error('snapnbd: installing the build tools (devDependencies) to compile dist/');
  const r = spawnSync(cmd, [...pre, 'ci', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: root, env, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`snapnbd: could not install the build tools (npm ci exited ${r.status ?? r.signal})`);
    process.exit(1);
  }
}
