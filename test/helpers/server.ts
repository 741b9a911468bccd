// Starts the real server (bin/snapnbd, its own process) for integration and interop tests and
// stops it: every spawned process is cleaned up, even when a test fails.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { once } from 'node:events';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
export const SNAPNBD_BIN = join(REPO_ROOT, 'bin', 'snapnbd');

export interface ServerOptions {
  /** Reuse a data dir (for restarts); default: a new temporary one, removed by stop(). */
  dataDir?: string;
  /** Extra `serve` arguments, e.g. ['--volume', 'vm1=64M', '/path/image.raw']. */
  args?: string[];
  /** Also listen on a unix socket at this path. */
  unixSocket?: string;
  env?: NodeJS.ProcessEnv;
  /** Pipe the server's stderr to ours (debugging). */
  verbose?: boolean;
  /** Another snapnbd to run (an installed one, through its `#!/usr/bin/env node` line), in this
   *  directory, with exactly `env` (not ours plus `env`). Default: this checkout's bin/snapnbd. */
  installed?: { bin: string; cwd: string };
}

export interface RunningServer {
  proc: ChildProcess;
  port: number;
  host: string;
  dataDir: string;
  controlPath: string;
  /** The --metrics port, when the server was given one (0 otherwise). */
  metricsPort: number;
  /** nbd://127.0.0.1:PORT/NAME */
  uri(exportName?: string): string;
  /** Everything the server printed to stderr so far. */
  stderr(): string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait. */
  kill(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });

export function tempDir(prefix = 'snapnbd-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startServer(opts: ServerOptions = {}): Promise<RunningServer> {
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? tempDir();
  const args = ['serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--log-level', 'warn'];
  if (opts.unixSocket) args.push('--listen', `unix:${opts.unixSocket}`);
  args.push(...(opts.args ?? []));
  const inst = opts.installed;
  const proc = spawn(inst ? inst.bin : process.execPath, inst ? args : [SNAPNBD_BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: inst ? opts.env : { ...process.env, ...opts.env },
    ...(inst ? { cwd: inst.cwd } : {}),
  });
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  let out = '';
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
    if (opts.verbose) process.stderr.write(d);
  });
  let port = 0;
  let metricsPort = 0;
  let controlPath = join(dataDir, 'control.sock');
  await new Promise<void>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not become ready in 60 s:\n${err}`)), 60_000);
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      for (const line of out.split('\n')) {
        const nbd = /^listening nbd 127\.0\.0\.1:(\d+)$/.exec(line);
        if (nbd && port === 0) port = Number(nbd[1]);
        const ctl = /^listening control (.+)$/.exec(line);
        if (ctl) controlPath = ctl[1]!;
        const met = /^listening metrics .*:(\d+)$/.exec(line);
        if (met) metricsPort = Number(met[1]);
        if (line === 'ready') { clearTimeout(timer); resolveReady(); }
      }
    });
    proc.once('exit', (code, sig) => { clearTimeout(timer); reject(new Error(`server exited (${code ?? sig}) before ready:\n${err}`)); });
  });
  const waitExit = async (): Promise<number | null> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
    const [code] = (await once(proc, 'exit')) as [number | null];
    return code;
  };
  return {
    proc, port, host: '127.0.0.1', dataDir, controlPath, metricsPort,
    uri: (name = '') => `nbd://127.0.0.1:${port}/${name}`,
    stderr: () => err,
    async stop() {
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      const code = await waitExit();
      clearTimeout(t);
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
      return code;
    },
    async kill() {
      proc.kill('SIGKILL');
      await waitExit();
    },
  };
}

export interface CliResult { code: number; stdout: string; stderr: string }

/** `snapnbd ARGS...` as a user runs it (bin/snapnbd under this Node), with extra environment. */
export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [SNAPNBD_BIN, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
