// Runs a real client tool and keeps everything it said: interop tests assert on its output, and a
// failure shows the client's exact words (what the server author needs to see).
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export interface ToolResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Long enough for a 256 MiB copy on a busy 2-core machine; a hung client is killed, not waited on. */
export const TOOL_TIMEOUT_MS = 180_000;

export async function tool(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ToolResult> {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  proc.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  proc.stdin.on('error', () => { /* the tool may exit before reading its input */ });
  proc.stdin.end(opts.input ?? '');
  const timer = setTimeout(() => proc.kill('SIGKILL'), opts.timeoutMs ?? TOOL_TIMEOUT_MS);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    proc.once('error', reject);
    proc.once('close', (c, s) => resolve([c, s]));
  });
  clearTimeout(timer);
  return { code, signal, stdout, stderr };
}

/** Like tool(), but a non-zero exit throws with the command line and everything it printed. */
export async function mustRun(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ToolResult> {
  const r = await tool(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
  return r;
}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * nbdsh is a shell script that runs `python3 -m nbd` from PATH; a pyenv or virtualenv python
 * shadows the Debian one that has the libnbd bindings, so put the system directories first.
 */
export const NBDSH_ENV: NodeJS.ProcessEnv = { PATH: `/usr/bin:/bin:${process.env['PATH'] ?? ''}` };
