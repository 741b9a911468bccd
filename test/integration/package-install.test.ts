// Issue 18: snapnbd installs like any Node tool. On a fresh clone of this repository (its committed
// HEAD): `npm install -g .` into a temporary prefix (npm runs `prepare`, which must fetch the build
// tools itself, since a global folder install has no devDependencies), then `npm pack`; the
// tarball's file list is exactly what runs and what a user reads; the tarball installs offline
// into a fresh prefix and runs on a copy of this machine's Node with nothing else around: no
// TypeScript, no tsx, no node_modules. Each installed snapnbd serves a volume that nbdinfo reads.
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { REPO_ROOT, startServer, tempDir, type RunningServer } from '../helpers/server.ts';

const run = promisify(execFile);
const INSTALL_TIMEOUT_MS = 300_000;
const VOLUME_BYTES = 64 * 2 ** 20;

/** Our environment without what npm (which runs vitest under `npm test`) passed down to us: a
 *  nested npm must see only the settings a user's shell would give it. */
function userEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_/i.test(k) && k !== 'NODE_OPTIONS' && k !== 'NODE_PATH' && k !== 'INIT_CWD') env[k] = v;
  }
  return { ...env, ...extra };
}

async function npm(cwd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run('npm', args, { cwd, env: userEnv(), maxBuffer: 64 * 2 ** 20, timeout: INSTALL_TIMEOUT_MS });
  } catch (e) {
    const err = e as { message: string; stdout?: string; stderr?: string };
    throw new Error(`npm ${args.join(' ')} failed in ${cwd}: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  }
}

/** npm's warnings (a user would have to act on them), with npm's own notices left out. */
function warnings(out: { stdout: string; stderr: string }): string[] {
  return (out.stdout + out.stderr).split('\n').filter((l) => /\bwarn/i.test(l));
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) => statSync(join(dir, p)).isFile());
}

describe('installing snapnbd', () => {
  let work: string;
  let clone: string;
  let commit: string;
  let tarball: string;
  let cloneInstall: { stdout: string; stderr: string };
  const servers: RunningServer[] = [];

  beforeAll(async () => {
    requires('git', 'nbdinfo');
    work = tempDir('snapnbd-install-');
    clone = join(work, 'clone');
    commit = (await run('git', ['-C', REPO_ROOT, 'rev-parse', 'HEAD'])).stdout.trim();
    await run('git', ['clone', '--quiet', REPO_ROOT, clone]);
    expect(existsSync(join(clone, 'node_modules'))).toBe(false);
    // The README's development install. `--allow-scripts=.` lets npm 11 run this folder's prepare
    // step without its advisory warning.
    cloneInstall = await npm(clone, ['install', '-g', '--allow-scripts=.', '--prefix', join(work, 'clone-prefix'), '.']);
    // The README's way to make a tarball; prepare builds dist/ again first.
    const packed = await npm(clone, ['pack', '--json', '--pack-destination', work]);
    tarball = join(work, (JSON.parse(packed.stdout) as [{ filename: string }])[0].filename);
  }, 2 * INSTALL_TIMEOUT_MS);

  afterAll(async () => {
    for (const s of servers) await s.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  /** Serves a 64 MiB volume with an installed snapnbd and reads it with nbdinfo. */
  async function serveAndRead(bin: string, env: NodeJS.ProcessEnv): Promise<void> {
    const server = await startServer({ args: ['--volume', `v=${VOLUME_BYTES}`], installed: { bin, cwd: work }, env });
    servers.push(server);
    const info = JSON.parse((await run('nbdinfo', ['--json', server.uri('v')])).stdout) as { exports: { 'export-size': number }[] };
    expect(info.exports[0]!['export-size']).toBe(VOLUME_BYTES);
    expect(await server.stop()).toBe(0);
  }

  it('npm install -g . from a fresh clone installs the build tools itself, builds, and runs the build', async () => {
    expect(warnings(cloneInstall)).toEqual([]);
    const bin = join(work, 'clone-prefix', 'bin', 'snapnbd');
    const version = (await run(bin, ['--version'], { env: userEnv() })).stdout;
    // Built from the clone's commit, and running dist/ (the sources would say "from sources").
    expect(version).toMatch(new RegExp(`^snapnbd \\d+\\.\\d+\\.\\d+ \\(commit ${commit}, built \\S+\\)\\n$`));
    await serveAndRead(bin, userEnv());
  }, INSTALL_TIMEOUT_MS);

  it('npm pack lists exactly dist/, bin/, README.md, protocol/, contrib/, LICENSE and package.json', async () => {
    const listed = (JSON.parse((await npm(clone, ['pack', '--dry-run', '--json', '--ignore-scripts'])).stdout) as [{ files: { path: string }[] }])[0]
      .files.map((f) => f.path).sort();
    const tracked = (await run('git', ['-C', clone, 'ls-files', 'bin', 'protocol', 'contrib'])).stdout.split('\n').filter(Boolean);
    // dist/ holds one .js per TypeScript source (no tests, no source maps), any non-TypeScript
    // asset src/ ships beside them, and the build record. The console's browser sources compile
    // into its static folder beside its HTML and CSS (tsconfig.console.json).
    const src = join(clone, 'src');
    // Declaration files (the types the server and the console share) compile to nothing.
    const compiled = filesUnder(src).filter((p) => !p.endsWith('.md') && !p.endsWith('.d.ts'))
      .map((p) => 'dist/' + p.replace(/\.ts$/, '.js').replace(/^http\/console\/browser\//, 'http/console/static/'));
    const expected = ['package.json', 'README.md', 'LICENSE', 'dist/build-info.json', ...tracked, ...compiled].sort();
    expect(listed).toEqual(expected);
  }, INSTALL_TIMEOUT_MS);

  it('the tarball installs offline into a fresh prefix and serves on a copy of node with nothing else around', async () => {
    const prefix = join(work, 'tarball-prefix');
    const installed = await npm(work, ['install', '-g', '--offline', '--ignore-scripts', '--prefix', prefix, tarball]);
    expect(warnings(installed)).toEqual([]);
    const pkg = join(prefix, 'lib', 'node_modules', 'snapnbd');
    const nodeDir = join(work, 'node-copy');
    mkdirSync(nodeDir);
    copyFileSync(process.execPath, join(nodeDir, 'node'));
    await run('chmod', ['755', join(nodeDir, 'node')]);
    // `#!/usr/bin/env node` finds the copy first; /usr/bin stays for nbdinfo's sake only.
    const env = { PATH: `${nodeDir}:${join(prefix, 'bin')}:/usr/bin:/bin`, HOME: work, LANG: 'C.UTF-8' };
    const bin = join(prefix, 'bin', 'snapnbd');
    const version = (await run(bin, ['--version'], { env, cwd: work })).stdout;
    expect(version).toMatch(new RegExp(`^snapnbd \\d+\\.\\d+\\.\\d+ \\(commit ${commit}, built \\S+\\)\\n$`));
    await serveAndRead(bin, env);
    // What ran is the compiled code alone: no sources, no dependencies were installed with it.
    expect(existsSync(join(pkg, 'dist', 'cli', 'main.js'))).toBe(true);
    for (const absent of ['src', 'node_modules', 'test', 'scripts']) expect(existsSync(join(pkg, absent))).toBe(false);
  }, INSTALL_TIMEOUT_MS);
});
