// Readiness and state for systemd (Type=notify). Node cannot send on a unix datagram socket, so
// when systemd gave us NOTIFY_SOCKET we run `systemd-notify`, which ships with systemd and waits
// until systemd has read the message (a barrier), so no notification is lost to a race. Without
// NOTIFY_SOCKET (not under systemd) this does nothing.
import { execFile } from 'node:child_process';
import { log } from '../util/log.ts';

/** systemd-notify returns at once normally; one stuck this long is given up on. */
const NOTIFY_TIMEOUT_MS = 10_000;

export function underSystemd(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.NOTIFY_SOCKET ?? '') !== '';
}

/** Sends `VAR=VALUE` assignments (READY=1, STOPPING=1, STATUS=...); resolves when done or failed. */
export function notifySystemd(assignments: string[]): Promise<void> {
  if (!underSystemd()) return Promise.resolve();
  return new Promise((resolve) => {
    execFile('systemd-notify', assignments, { timeout: NOTIFY_TIMEOUT_MS }, (err, _out, stderr) => {
      if (err) log.warn(`systemd-notify ${assignments.join(' ')} failed${stderr ? `: ${stderr.trim()}` : ''}`, err);
      resolve();
    });
  });
}
