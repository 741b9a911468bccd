// Boots the test VM (test/vm/build-image.sh: a Debian kernel and a busybox initramfs) under
// qemu's TCG and drives its shell over the serial console, so a test can interleave guest steps
// (nbd-client, mkfs, mount, fsfreeze) with host steps (control socket calls, server restarts).
//
// Protocol on the console: the guest's shell reads lines without echo. Each run() ships its
// command base64-encoded into a file (any quoting, any length), runs it with stdin from
// /dev/null, then prints a marker carrying a per-boot nonce, a sequence number and the exit
// status; the output is whatever the console printed in between (kernel messages included).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/server.ts';

/** The address the guest dials for the NBD server; slirp's guestfwd forwards it to the host's loopback. */
export const GUEST_NBD_HOST = '10.0.2.100';
export const GUEST_NBD_PORT = 10809;
/** TCG on two shared cores: booting takes ~10 s when idle, far more under a loaded test run. */
export const BOOT_TIMEOUT_MS = 180_000;
export const RUN_TIMEOUT_MS = 180_000;
const POWEROFF_TIMEOUT_MS = 30_000;
/** Console lines are read by the tty in canonical mode (4095-byte limit): ship base64 in short lines. */
const CONSOLE_LINE_CHARS = 512;
const MEMORY_MIB = 512;
/** What the console keeps for error messages. */
const CONSOLE_TAIL_CHARS = 4000;
/** How long a guest connection waits for a server that is down (restarting): attempts × delay. */
const FORWARD_CONNECT_ATTEMPTS = 120;
const FORWARD_RETRY_SECONDS = 0.5;
const READY_MARKER = /@@SNAPNBD-VM-READY ([^@]*)@@\n/;
/** guest-init.sh prints this when the console shell ends (then starts another). */
const SHELL_EXIT = /@@SNAPNBD-VM-SHELL-EXIT \d+@@/;

export interface VmImage { dir: string; kernel: string; initrd: string }

let image: VmImage | null = null;

/** Builds the image when it is not cached (test/vm/.cache/); as root. Memoized per process. */
export function vmImage(): VmImage {
  if (image) return image;
  const out = execFileSync('bash', [join(REPO_ROOT, 'test', 'vm', 'build-image.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 600_000,
  });
  const dir = out.trim().split('\n').at(-1)!;
  image = { dir, kernel: join(dir, 'vmlinuz'), initrd: join(dir, 'initrd.gz') };
  return image;
}

export interface GuestOptions {
  /** Host port (on 127.0.0.1) that the guest reaches at GUEST_NBD_HOST:GUEST_NBD_PORT. */
  nbdPort?: number;
  /** Extra -drive values, e.g. `file=nbd://127.0.0.1:PORT/vm1,format=raw,if=virtio`. */
  drives?: string[];
  /** A label for error messages. */
  name?: string;
  bootTimeoutMs?: number;
}

export interface RunResult { status: number; output: string }

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });

export class Guest {
  readonly name: string;
  readonly kernelRelease: string;
  private readonly proc: ChildProcess;
  private readonly nonce: string;
  private console: string;
  private seq = 0;
  private queue: Promise<unknown> = Promise.resolve();
  private waiter: (() => void) | null = null;
  private exited = false;

  private constructor(name: string, proc: ChildProcess, console: string, kernelRelease: string, nonce: string) {
    this.name = name;
    this.proc = proc;
    this.console = console;
    this.kernelRelease = kernelRelease;
    this.nonce = nonce;
  }

  /** Boots a VM and waits for its shell. */
  static async boot(opts: GuestOptions = {}): Promise<Guest> {
    const img = vmImage();
    const name = opts.name ?? 'vm';
    const netdev = ['user', 'id=n0', 'restrict=on'];
    const tmp = mkdtempSync(join(tmpdir(), 'snapnbd-vm-'));
    if (opts.nbdPort !== undefined) {
      // `cmd:` runs one forwarder per guest connection (a chardev target would serve a single
      // connection for qemu's whole life: no -C 4, no reconnect). slirp has already accepted
      // the guest's connection when the forwarder starts, so a server that is down (restarting)
      // would look like "accepted, then closed", which nbd-client treats as fatal, where a real
      // network answers "refused" and nbd-client -persist retries. The forwarder therefore
      // retries connecting for a while, as a refused-then-retried connect would.
      // busybox nc reaches only 127.0.0.1; restrict=on keeps the guest off every other address.
      const fwd = join(tmp, 'nbd-forward.sh');
      writeFileSync(fwd, [
        '#!/bin/bash',
        '# Wait (bounded) until the server accepts, then relay this connection to it.',
        `for ((i = 0; i < ${FORWARD_CONNECT_ATTEMPTS}; i++)); do`,
        `  (exec 3<>/dev/tcp/127.0.0.1/${opts.nbdPort}) 2>/dev/null && exec busybox nc 127.0.0.1 ${opts.nbdPort}`,
        `  sleep ${FORWARD_RETRY_SECONDS}`,
        'done', 'exit 1', '',
      ].join('\n'), { mode: 0o755 });
      netdev.push(`guestfwd=tcp:${GUEST_NBD_HOST}:${GUEST_NBD_PORT}-cmd:${fwd}`);
    }
    const args = [
      '-accel', 'tcg', '-cpu', 'max', '-m', String(MEMORY_MIB), '-nographic', '-no-reboot',
      '-kernel', img.kernel, '-initrd', img.initrd,
      // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can fail and panic.
      '-append', 'console=ttyS0 quiet panic=-1 no_timer_check',
      '-netdev', netdev.join(','), '-device', 'e1000,netdev=n0',
    ];
    for (const d of opts.drives ?? []) args.push('-drive', d);
    const proc = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(proc);
    let text = '';
    let boundGuest: Guest | null = null;
    let wake: (() => void) | null = null;
    const onData = (d: string): void => {
      if (boundGuest) boundGuest.feed(d);
      else { text += d; wake?.(); }
    };
    proc.stdout!.setEncoding('utf8').on('data', onData);
    proc.stderr!.setEncoding('utf8').on('data', onData);
    let exited = false;
    proc.once('exit', () => {
      live.delete(proc);
      rmSync(tmp, { recursive: true, force: true });
      exited = true;
      if (boundGuest) boundGuest.onExit();
      else wake?.();
    });
    const deadline = Date.now() + (opts.bootTimeoutMs ?? BOOT_TIMEOUT_MS);
    let m: RegExpExecArray | null;
    while ((m = READY_MARKER.exec(text)) === null) {
      if (exited) throw new Error(`${name}: qemu exited during boot:\n${text.slice(-CONSOLE_TAIL_CHARS)}`);
      const left = deadline - Date.now();
      if (left <= 0) {
        proc.kill('SIGKILL');
        throw new Error(`${name}: no shell after ${opts.bootTimeoutMs ?? BOOT_TIMEOUT_MS} ms:\n${text.slice(-CONSOLE_TAIL_CHARS)}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        wake = () => { clearTimeout(t); wake = null; resolve(); };
      });
    }
    const guest = new Guest(name, proc, text.slice(m.index + m[0].length), m[1]!, randomBytes(6).toString('hex'));
    boundGuest = guest;
    await guest.run(':'); // swallows the shell's banner, so the first real command's output is its own
    return guest;
  }

  private feed(d: string): void {
    this.console += d;
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  private onExit(): void {
    this.exited = true;
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** True while qemu runs. */
  get running(): boolean { return !this.exited; }

  /** The console text since boot (for diagnostics). */
  transcript(): string { return this.console; }

  /** Runs a shell command (any text, several lines allowed) in the guest; never throws on a non-zero status. */
  run(cmd: string, timeoutMs = RUN_TIMEOUT_MS): Promise<RunResult> {
    const next = this.queue.then(() => this.runNow(cmd, timeoutMs));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** run(), but a non-zero status throws with the command's output. */
  async sh(cmd: string, timeoutMs = RUN_TIMEOUT_MS): Promise<string> {
    const r = await this.run(cmd, timeoutMs);
    if (r.status !== 0) throw new Error(`${this.name}: exit ${r.status}: ${cmd}\n${r.output}`);
    return r.output;
  }

  private async runNow(cmd: string, timeoutMs: number): Promise<RunResult> {
    if (this.exited) throw new Error(`${this.name}: the VM is not running; cannot run: ${cmd}`);
    const seq = ++this.seq;
    const marker = new RegExp(`@@END-${this.nonce}-${seq} (\\d+)@@\\n`);
    const b64 = Buffer.from(cmd, 'utf8').toString('base64');
    const lines = [': > /tmp/.cmd.b64'];
    for (let i = 0; i < b64.length; i += CONSOLE_LINE_CHARS) lines.push(`echo ${b64.slice(i, i + CONSOLE_LINE_CHARS)} >> /tmp/.cmd.b64`);
    // The marker is assembled from two halves so a stray echo of this line can never match it.
    lines.push(`base64 -d /tmp/.cmd.b64 > /tmp/.cmd; sh /tmp/.cmd < /dev/null; echo "@@END-${this.nonce}-""${seq} $?@@"`);
    const start = this.console.length;
    this.proc.stdin!.write(lines.join('\n') + '\n');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = marker.exec(this.console.slice(start));
      if (m) {
        const output = this.console.slice(start, start + m.index);
        return { status: Number(m[1]), output };
      }
      if (SHELL_EXIT.test(this.console.slice(start))) throw new Error(`${this.name}: the guest's shell died while running: ${cmd}\n${this.console.slice(-CONSOLE_TAIL_CHARS)}`);
      if (this.exited) throw new Error(`${this.name}: qemu exited while running: ${cmd}\n${this.console.slice(-CONSOLE_TAIL_CHARS)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name}: no answer in ${timeoutMs} ms to: ${cmd}\n${this.console.slice(-CONSOLE_TAIL_CHARS)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiter = () => { clearTimeout(t); resolve(); };
      });
    }
  }

  /** Syncs and powers the guest off; qemu is killed if it does not exit in time. Idempotent. */
  async close(): Promise<void> {
    if (this.exited) return;
    const exit = once(this.proc, 'exit').catch(() => undefined);
    try {
      this.proc.stdin!.write('sync; poweroff -f\n');
    } catch { /* qemu already gone */ }
    const t = setTimeout(() => this.proc.kill('SIGKILL'), POWEROFF_TIMEOUT_MS);
    if (!this.exited) await exit;
    clearTimeout(t);
  }

  /** Kills qemu at once (no sync): a crash, or cleanup after a failure. */
  async kill(): Promise<void> {
    if (this.exited) return;
    const exit = once(this.proc, 'exit').catch(() => undefined);
    this.proc.kill('SIGKILL');
    await exit;
  }
}
