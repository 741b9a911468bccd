// A small Chrome DevTools Protocol client for browser tests: starts Debian's headless chromium
// with --remote-debugging-pipe (it reads commands on fd 3 and writes replies and events on fd 4,
// each message a JSON text ended by a NUL byte), opens pages in flattened sessions, and stops
// the browser (and removes its fresh profile) when the test is done, also when it fails.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { requires } from './requires.ts';

export const CHROMIUM = 'chromium';
const CALL_TIMEOUT_MS = 30_000;
const WAIT_POLL_MS = 50;
const CLOSE_GRACE_MS = 5_000;

const live = new Set<ChildProcess>();
process.on('exit', () => { for (const p of live) p.kill('SIGKILL'); });

interface Pending { resolve(v: unknown): void; reject(e: Error): void; method: string; timer: NodeJS.Timeout }
type EventHandler = (params: Record<string, unknown>, sessionId: string | undefined) => void;

export class Browser {
  private readonly proc: ChildProcess;
  private readonly toBrowser: Writable;
  private readonly profile: string;
  private readonly pending = new Map<number, Pending>();
  private readonly handlers = new Map<string, Set<EventHandler>>();
  private nextId = 1;
  private inbuf: Buffer = Buffer.alloc(0);
  private stderr = '';
  private exited: Promise<void>;

  private constructor(proc: ChildProcess, profile: string) {
    this.proc = proc;
    this.profile = profile;
    this.toBrowser = proc.stdio[3] as Writable;
    const fromBrowser = proc.stdio[4] as Readable;
    fromBrowser.on('data', (d: Buffer) => this.onData(d));
    this.toBrowser.on('error', () => undefined);
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => { this.stderr = (this.stderr + d).slice(-8192); });
    this.exited = new Promise((r) => proc.once('exit', () => {
      live.delete(proc);
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error(`chromium exited during ${p.method}:\n${this.stderr}`));
      }
      this.pending.clear();
      r();
    }));
  }

  /** `extraArgs`: more chromium flags (e.g. --ignore-certificate-errors-spki-list for a test CA). */
  static async launch(extraArgs: string[] = []): Promise<Browser> {
    requires(CHROMIUM);
    const profile = mkdtempSync(join(tmpdir(), 'snapnbd-chromium-'));
    const proc = spawn(CHROMIUM, [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', '--remote-debugging-pipe', `--user-data-dir=${profile}`, ...extraArgs, 'about:blank',
    ], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    live.add(proc);
    const b = new Browser(proc, profile);
    await b.call('Browser.getVersion'); // the pipe answers: the browser is up
    return b;
  }

  /** One command; `sessionId` sends it to a page. */
  call<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<T> {
    const id = this.nextId++;
    const msg = JSON.stringify(sessionId === undefined ? { id, method, params } : { id, method, params, sessionId });
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`CDP ${method}: no answer in ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, method, timer });
      this.toBrowser.write(`${msg}\0`);
    });
  }

  on(event: string, fn: EventHandler): () => void {
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  async newPage(width = 1100, height = 760, mobile = false): Promise<Page> {
    const { targetId } = await this.call<{ targetId: string }>('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.call<{ sessionId: string }>('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this, sessionId);
    await page.call('Page.enable');
    await page.call('Runtime.enable');
    await page.call('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile });
    return page;
  }

  async close(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.call('Browser.close').catch(() => undefined);
      const t = setTimeout(() => this.proc.kill('SIGKILL'), CLOSE_GRACE_MS);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(this.profile, { recursive: true, force: true });
  }

  private onData(d: Buffer): void {
    this.inbuf = this.inbuf.length === 0 ? d : Buffer.concat([this.inbuf, d]);
    for (;;) {
      const end = this.inbuf.indexOf(0);
      if (end < 0) return;
      const msg = JSON.parse(this.inbuf.subarray(0, end).toString('utf8')) as {
        id?: number; result?: unknown; error?: { message: string }; method?: string; params?: Record<string, unknown>; sessionId?: string;
      };
      this.inbuf = this.inbuf.subarray(end + 1);
      if (msg.id !== undefined) {
        const p = this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.error) p.reject(new Error(`CDP ${p.method}: ${msg.error.message}`));
        else p.resolve(msg.result);
      } else if (msg.method !== undefined) {
        for (const fn of this.handlers.get(msg.method) ?? []) fn(msg.params ?? {}, msg.sessionId);
      }
    }
  }
}

export class Page {
  readonly browser: Browser;
  readonly sessionId: string;
  /** Uncaught exceptions and console errors in the page (a test asserts there are none). */
  readonly errors: string[] = [];

  constructor(browser: Browser, sessionId: string) {
    this.browser = browser;
    this.sessionId = sessionId;
    browser.on('Runtime.exceptionThrown', (p, sid) => {
      if (sid === sessionId) this.errors.push(JSON.stringify((p.exceptionDetails as { exception?: { description?: string } })?.exception?.description ?? p));
    });
    browser.on('Runtime.consoleAPICalled', (p, sid) => {
      if (sid === sessionId && p.type === 'error') this.errors.push(JSON.stringify(p.args));
    });
  }

  call<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    return this.browser.call<T>(method, params, this.sessionId);
  }

  /** Navigates and waits for the load event. */
  async goto(url: string): Promise<void> {
    const loaded = new Promise<void>((resolve) => {
      const off = this.browser.on('Page.loadEventFired', (_p, sid) => {
        if (sid === this.sessionId) { off(); resolve(); }
      });
    });
    const r = await this.call<{ errorText?: string }>('Page.navigate', { url });
    if (r.errorText) throw new Error(`navigate ${url}: ${r.errorText}`);
    await loaded;
  }

  /** Evaluates an expression in the page (promises awaited) and returns its JSON value. */
  async eval<T = unknown>(expression: string): Promise<T> {
    const r = await this.call<{ result: { value?: unknown }; exceptionDetails?: { text: string; exception?: { description?: string } } }>(
      'Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true, userGesture: true });
    if (r.exceptionDetails) throw new Error(`in page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}\n  evaluating: ${expression}`);
    return r.result.value as T;
  }

  /** Polls until `expression` is truthy; returns its value. */
  async waitFor<T = unknown>(expression: string, what: string, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await this.eval<T>(expression);
      if (v) return v;
      if (Date.now() > deadline) {
        const text = await this.eval<string>('document.body.innerText').catch(() => '?');
        throw new Error(`timed out waiting for ${what}; the page says:\n${text}`);
      }
      await new Promise((r) => setTimeout(r, WAIT_POLL_MS));
    }
  }

  /** Clicks the element `selector` names (through the DOM, like a user's click would). */
  async click(selector: string): Promise<void> {
    await this.waitFor(`!!document.querySelector(${JSON.stringify(selector)})`, `element ${selector}`);
    await this.eval(`document.querySelector(${JSON.stringify(selector)}).click()`);
  }

  /** Real key presses (Tab, Enter, Escape, or one printable character). */
  async press(key: 'Tab' | 'Enter' | 'Escape' | string): Promise<void> {
    const codes: Record<string, number> = { Tab: 9, Enter: 13, Escape: 27 };
    const code = codes[key];
    const base = code !== undefined
      ? { key, code: key, windowsVirtualKeyCode: code, nativeVirtualKeyCode: code }
      : { key, text: key, unmodifiedText: key };
    // As a keyboard does: a key that types (Enter types '\r') sends keyDown, others rawKeyDown.
    const types = code === undefined || key === 'Enter';
    await this.call('Input.dispatchKeyEvent', { type: types ? 'keyDown' : 'rawKeyDown', ...base, ...(key === 'Enter' ? { text: '\r' } : {}) });
    await this.call('Input.dispatchKeyEvent', { type: 'keyUp', ...base });
  }

  /** Types text into the focused element. */
  async type(text: string): Promise<void> {
    await this.call('Input.insertText', { text });
  }

  async close(): Promise<void> {
    const { targetInfo } = await this.call<{ targetInfo: { targetId: string } }>('Target.getTargetInfo');
    await this.browser.call('Target.closeTarget', { targetId: targetInfo.targetId });
  }

  /** A PNG of the viewport, or with `fullPage` of the whole document. */
  async screenshot(path: string, fullPage = false): Promise<void> {
    let clip = {};
    if (fullPage) {
      const m = await this.call<{ cssContentSize: { width: number; height: number } }>('Page.getLayoutMetrics');
      clip = { clip: { x: 0, y: 0, width: m.cssContentSize.width, height: m.cssContentSize.height, scale: 1 }, captureBeyondViewport: true };
    }
    const { data } = await this.call<{ data: string }>('Page.captureScreenshot', { format: 'png', ...clip });
    writeFileSync(path, Buffer.from(data, 'base64'));
  }
}
