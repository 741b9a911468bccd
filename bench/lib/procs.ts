// Every process the harness starts goes through here, so that each one is killed when the
// harness ends: normally, on an error, or on SIGINT/SIGTERM. A benchmark that leaves an nbdkit
// or a snapnbd behind poisons the next run's numbers (and its ports).
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer } from 'node:net';
import { existsSync } from 'node:fs';

const live = new Set<ChildProcess>();

/** Time a server gets for a graceful stop before SIGKILL. */
export const STOP_GRACE_MS = 15_000;
/** Time a server gets to accept connections after it was started. */
export const READY_TIMEOUT_MS = 60_000;

function killAll(): void {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
  live.clear();
}

let handlersInstalled = false;
export function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}: killing ${live.size} child process(es)\n`);
      killAll();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
  process.on('uncaughtException', (e) => {
    process.stderr.write(`bench: uncaught: ${e.stack ?? String(e)}\n`);
    killAll();
    process.exit(1);
  });
}

export interface Tracked {
  proc: ChildProcess;
  pid: number;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after the grace period; resolves once it has exited. */
  stop(graceMs?: number): Promise<number | string>;
}

export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}): Tracked {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  live.add(proc);
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8').on('data', (d: string) => { out += d; });
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const exited = new Promise<number | string>((resolveExit) => {
    proc.once('exit', (code, sig) => {
      live.delete(proc);
      resolveExit(code ?? sig ?? 'unknown');
    });
    proc.once('error', (e) => {
      live.delete(proc);
      err += `spawn error: ${e.message}\n`;
      resolveExit('spawn-error');
    });
  });
  return {
    proc,
    pid: proc.pid ?? -1,
    stdout: () => out,
    stderr: () => err,
    exited,
    async stop(graceMs = STOP_GRACE_MS) {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

/** Runs a command to completion; rejects with its stderr when it fails. */
export async function run(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<{ stdout: string; stderr: string; ms: number }> {
  const t0 = process.hrtime.bigint();
  const p = spawnTracked(cmd, args, opts);
  const timer = opts.timeoutMs ? setTimeout(() => p.proc.kill('SIGKILL'), opts.timeoutMs) : null;
  const code = await p.exited;
  if (timer) clearTimeout(timer);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${code}):\n${p.stderr().slice(-2000)}${p.stdout().slice(-1000)}`);
  }
  return { stdout: p.stdout(), stderr: p.stderr(), ms };
}

/** A TCP port that was free a moment ago (the usual small race; the servers here need a number). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  srv.close();
  await once(srv, 'close');
  return port;
}

function tryConnect(target: { port: number } | { path: string }): Promise<boolean> {
  return new Promise((resolveTry) => {
    const s = 'port' in target ? connect(target.port, '127.0.0.1') : connect(target.path);
    s.once('connect', () => { s.destroy(); resolveTry(true); });
    s.once('error', () => { s.destroy(); resolveTry(false); });
  });
}

/** Waits until a server accepts connections, or fails when it exits or times out. */
export async function waitListening(p: Tracked, target: { port: number } | { path: string }, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let dead = false;
  void p.exited.then(() => { dead = true; });
  while (Date.now() < deadline) {
    if (dead) throw new Error(`server exited before listening:\n${p.stderr().slice(-2000)}`);
    if (('path' in target ? existsSync(target.path) : true) && await tryConnect(target)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`server did not listen within ${timeoutMs} ms:\n${p.stderr().slice(-2000)}`);
}

/** Waits until `line` appears on the process's stdout. */
export async function waitLine(p: Tracked, test: (line: string) => boolean, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let dead = false;
  void p.exited.then(() => { dead = true; });
  while (Date.now() < deadline) {
    if (p.stdout().split('\n').some(test)) return;
    if (dead) throw new Error(`server exited before ready:\n${p.stderr().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`server not ready within ${timeoutMs} ms:\n${p.stderr().slice(-2000)}`);
}
