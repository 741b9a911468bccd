// The web console in a real browser: Debian's headless chromium driven over the DevTools protocol
// (test/helpers/cdp.ts) against the real server. Logs in with the link's token, takes a snapshot
// from the Volumes page and sees it ready, rolls back through the confirmation (refused while an
// NBD client holds the volume, then forced), clones, deletes, copies the nbd:// URI, draws the
// changes, follows changes made elsewhere live, works from the keyboard and on a phone-sized
// screen, and cannot be used from another origin. Screenshots go to a temporary directory
// (or to $SNAPNBD_CONSOLE_SHOTS, which is how docs/console/ is refreshed).
import { mkdirSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, type Page } from '../helpers/cdp.ts';
import { startConsoleServer, type ConsoleServer } from '../helpers/console.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';

const MiB = 1024 * 1024;
const shots = process.env.SNAPNBD_CONSOLE_SHOTS ? resolve(process.env.SNAPNBD_CONSOLE_SHOTS) : mkdtempSync(join(tmpdir(), 'snapnbd-console-shots-'));
mkdirSync(shots, { recursive: true });

let c: ConsoleServer;
let browser: Browser;
let page: Page;
const holders: NbdTestClient[] = [];
let otherOrigin: http.Server | null = null;

beforeAll(async () => {
  c = await startConsoleServer({ args: ['--volume', 'vm1=16M', '--volume', 'db=32M'] });
  browser = await Browser.launch();
  page = await browser.newPage();
  console.log(`console screenshots: ${shots}`);
});
afterAll(async () => {
  for (const h of holders) h.destroy();
  otherOrigin?.close();
  await browser?.close();
  await c?.stop();
});

const sel = (s: string): string => JSON.stringify(s);
const text = (selector: string): Promise<string> => page.eval<string>(`document.querySelector(${sel(selector)})?.innerText ?? ''`);
const dialogOpen = (): Promise<boolean> => page.eval<boolean>(`document.getElementById('dialog').open`);

async function waitText(selector: string, re: RegExp, p: Page = page): Promise<string> {
  return p.waitFor<string>(`(() => { const t = document.querySelector(${sel(selector)})?.innerText ?? ''; return ${re}.test(t) ? t : ''; })()`, `${selector} to match ${re}`);
}

async function snapshots(volume: string): Promise<{ name: string; state: string; clones: string[] }[]> {
  return (await c.ctl.call<{ snapshots: { name: string; state: string; clones: string[] }[] }>('snapshot.list', { volume })).snapshots;
}

async function hold(exportName: string): Promise<NbdTestClient> {
  const h = await NbdTestClient.connect(c.server.port, exportName);
  holders.push(h);
  return h;
}

describe('the web console in chromium', () => {
  it('logs in with the token from the login link, which leaves the address bar', async () => {
    await page.goto(`${c.base}/#token=${c.token}`);
    await page.waitFor(`document.querySelector('tr[data-volume="vm1"]')`, 'the vm1 row');
    expect(await page.eval('location.hash')).toBe('#/');
    await waitText('#live', /^live$/);
    expect(await text('tr[data-volume="db"] td[data-label="Size"]')).toBe('32 MiB');
    await page.screenshot(join(shots, 'volumes.png'));
  });

  it('a wrong token typed into the login form is refused', async () => {
    const other = await browser.newPage(800, 600);
    await other.goto(`${c.base}/`);
    await other.waitFor(`document.getElementById('token')`, 'the login form');
    await other.eval(`document.getElementById('token').value = ${sel(`${c.token}x`)}`);
    await other.eval(`document.querySelector('[data-key="login"]').click()`);
    await waitText('form.login .error', /That token was refused/, other);
    await other.screenshot(join(shots, 'login-refused.png'));
    await other.eval(`document.getElementById('token').value = ${sel(c.token)}`);
    await other.eval(`document.querySelector('[data-key="login"]').click()`);
    await other.waitFor(`document.querySelector('tr[data-volume="vm1"]')`, 'the volumes after a good token');
    expect(other.errors).toEqual([]);
    await other.close();
  });

  it('takes a snapshot from the Volumes page and shows it ready', async () => {
    const h = await hold('vm1');
    await h.write(0, Buffer.alloc(64 * 1024, 0x11));
    await h.flush();
    h.destroy();
    await page.click('[data-key="snap:vm1"]');
    expect(await dialogOpen()).toBe(true);
    expect(await page.eval(`document.activeElement.id`)).toBe('field-name');
    await page.type('s1');
    await page.eval(`document.getElementById('field-description').value = 'before the upgrade'`);
    await page.screenshot(join(shots, 'take-snapshot.png'));
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Snapshot vm1@s1 taken/);
    expect(await dialogOpen()).toBe(false);
    await waitText('tr[data-volume="vm1"] td[data-label="Snapshots"]', /^1$/);
    await page.click('tr[data-volume="vm1"] a');
    await waitText('tr[data-snapshot="s1"] td[data-label="State"]', /^ready$/);
    expect(await text('tr[data-snapshot="s1"] td[data-label="Description"]')).toBe('before the upgrade');
    expect(await snapshots('vm1')).toMatchObject([{ name: 's1', state: 'ready' }]);
    // The name is optional: the server generates one.
    await page.click('[data-key="snap:vm1"]');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Snapshot vm1@vm1-\d{8}T\d{6}Z taken/);
    expect((await snapshots('vm1')).map((s) => s.name)).toEqual(['s1', expect.stringMatching(/^vm1-\d{8}T\d{6}Z$/)]);
  });

  it('rolls back through the confirmation: refused while an NBD client holds the volume, then forced', async () => {
    const h = await hold('vm1');
    await h.write(0, Buffer.alloc(64 * 1024, 0x22));
    await h.flush();
    await waitText('dl.facts', /1 NBD connection/);
    await page.click('[data-key="rollback:vm1@s1"]');
    await waitText('#dialog', /1 NBD client connected to vm1/);
    await page.click('[data-key="dialog-confirm"]');
    const refusal = await waitText('#dialog .error', /VOLUME_BUSY/);
    expect(refusal).toMatch(/NBD connection/);
    expect(await page.eval(`document.querySelector('[data-key="dialog-force"]').hidden`)).toBe(false);
    expect(await text('[data-key="dialog-force"]')).toBe('Disconnect clients and roll back');
    await page.screenshot(join(shots, 'rollback-busy.png'));
    // Nothing changed while refused: the client still reads what it wrote.
    expect((await h.read(0, 4096)).equals(Buffer.alloc(4096, 0x22))).toBe(true);
    expect(h.isOpen).toBe(true);
    await page.click('[data-key="dialog-force"]');
    await waitText('#toast', /vm1 rolled back to s1 \(1 client disconnected\)/);
    await h.closed;
    const after = await hold('vm1');
    expect((await after.read(0, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
    await after.disconnect();
  });

  it('a plain rollback without clients needs only the confirmation', async () => {
    await waitText('dl.facts', /Clients\s+none/);
    await page.click('[data-key="rollback:vm1@s1"]');
    await page.click('[data-key="dialog-cancel"]');
    expect(await dialogOpen()).toBe(false);
    await page.click('[data-key="rollback:vm1@s1"]');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /^vm1 rolled back to s1$/);
  });

  it('clones a snapshot into a new volume', async () => {
    await page.click('[data-key="clone:vm1@s1"]');
    await page.type('c1');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Volume c1 cloned from vm1@s1/);
    await waitText('tr[data-snapshot="s1"] td[data-label="Clones"]', /^c1$/);
    expect(await c.ctl.call('volume.info', { name: 'c1' })).toMatchObject({ origin: { volume: 'vm1', snapshot: 's1' } });
    // A taken name: the server's refusal and its code show in the dialog, which stays open.
    await page.click('[data-key="clone:vm1@s1"]');
    await page.type('db');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#dialog .error', /\(NAME_TAKEN\)$/);
    expect(await page.eval(`document.querySelector('[data-key="dialog-force"]').hidden`)).toBe(true);
    await page.click('[data-key="dialog-cancel"]');
  });

  it('draws the changes since a snapshot and says how many bytes changed', async () => {
    const h = await hold('vm1');
    await h.write(8 * MiB, Buffer.alloc(64 * 1024, 0x33)); // one 64 KiB chunk in the middle of 16 MiB
    await h.flush();
    await h.disconnect();
    const newest = (await snapshots('vm1'))[1]!.name;
    await page.click(`[data-key="diff:vm1@${newest}"]`);
    const caption = await waitText('#diff-summary', /changed/);
    // The rollback to s1 brought back the very chunks the newest snapshot holds: only the new write differs.
    expect(caption).toMatch(new RegExp(`^64 KiB changed \\(0\\.4% of 16 MiB\\) in 1 extent from vm1@${newest} to vm1 \\(live\\)$`));
    const rects = await page.eval<{ x: number; w: number }[]>(`[...document.querySelectorAll('svg.strip rect.strip-changed')].map((r) => ({ x: +r.getAttribute('x'), w: +r.getAttribute('width') }))`);
    expect(rects).toEqual([{ x: 500, w: 4 }]);
    await page.eval(`document.getElementById('toast').textContent = ''`);
    await page.screenshot(join(shots, 'volume.png'), true);
  });

  it('copies the nbd:// URI of a snapshot', async () => {
    await browser.call('Browser.grantPermissions', { origin: c.base, permissions: ['clipboardReadWrite', 'clipboardSanitizedWrite'] });
    await page.click('[data-key="uri:vm1@s1"]');
    const uri = `nbd://127.0.0.1:${c.server.port}/vm1@s1`;
    // The clipboard, or (without clipboard access) a dialog showing the URI to copy.
    await page.waitFor(`document.getElementById('toast').innerText.includes(${sel(uri)}) || document.getElementById('field-show')?.value === ${sel(uri)}`, 'the URI');
    if (await dialogOpen()) await page.press('Escape');
  });

  it('shows a change made on the control socket without a reload', async () => {
    await c.ctl.call('snapshot.create', { volume: 'vm1', name: 'from-the-cli', description: 'made elsewhere' });
    await waitText('tr[data-snapshot="from-the-cli"] td[data-label="State"]', /^ready$/);
  });

  it('deletes: a busy snapshot is refused with the reason, then deleted; a volume after naming what is lost', async () => {
    const h = await hold('vm1@from-the-cli');
    await waitText('tr[data-snapshot="from-the-cli"] td[data-label="Exported"]', /^yes/);
    await page.click('[data-key="delsnap:vm1@from-the-cli"]');
    await waitText('#dialog', /exported to 1 NBD client/);
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#dialog .error', /\(SNAPSHOT_BUSY\)$/);
    expect(await page.eval(`document.querySelector('[data-key="dialog-force"]').hidden`)).toBe(true);
    await h.disconnect();
    // The page under a modal dialog waits for it to close; the server knows at once.
    for (let i = 0; (await c.ctl.call<{ connections: number }>('snapshot.info', { volume: 'vm1', name: 'from-the-cli' })).connections > 0; i++) {
      if (i > 200) throw new Error('the NBD client never went away');
      await new Promise((r) => setTimeout(r, 50));
    }
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Snapshot vm1@from-the-cli deleted/);
    await page.waitFor(`!document.querySelector('tr[data-snapshot="from-the-cli"]')`, 'the row to go');
    expect((await snapshots('vm1')).map((s) => s.name)).not.toContain('from-the-cli');

    // The clone c1, from the Volumes page.
    await page.eval(`location.hash = '#/'`);
    await page.click('[data-key="delvol:c1"]');
    expect(await page.eval(`document.activeElement.dataset.key`)).toBe('dialog-cancel'); // the safe choice first
    await waitText('#dialog', /Delete volume c1\?/);
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Volume c1 deleted/);
    await page.waitFor(`!document.querySelector('tr[data-volume="c1"]')`, 'the c1 row to go');
    // vm1's dialog names its snapshots and the clone that survives.
    await page.click('[data-key="delvol:vm1"]');
    const body = await text('#dialog');
    expect(body).toMatch(/with its 2 snapshots: s1, vm1-\d{8}T\d{6}Z\./);
    await page.screenshot(join(shots, 'delete-volume.png'));
    await page.click('[data-key="dialog-cancel"]');
    expect((await c.ctl.call<{ volumes: { name: string }[] }>('volume.list')).volumes.map((v) => v.name).sort()).toEqual(['db', 'vm1']);
  });

  it('works from the keyboard: Enter opens the dialog, typing and Enter take the snapshot', async () => {
    await page.call('Page.bringToFront');
    await page.eval(`document.querySelector('[data-key="snap:db"]').focus()`);
    await page.press('Enter');
    expect(await dialogOpen()).toBe(true);
    expect(await page.eval(`document.activeElement.id`)).toBe('field-name');
    await page.type('kb');
    await page.press('Enter');
    await waitText('#toast', /Snapshot db@kb taken/);
    expect((await snapshots('db')).map((s) => s.name)).toEqual(['kb']);
    // Focus stays on the button through the re-render; Tab moves on to the next control.
    expect(await page.eval(`document.activeElement.dataset.key`)).toBe('snap:db');
    await page.press('Tab');
    expect(await page.eval(`document.activeElement.dataset.key`)).toBe('delvol:db');
    await page.press('Enter');
    expect(await dialogOpen()).toBe(true);
    await page.press('Escape');
    expect(await dialogOpen()).toBe(false);
    expect(page.errors).toEqual([]);
  });

  it('fits a phone screen', async () => {
    const phone = await browser.newPage(390, 844, true);
    await phone.goto(`${c.base}/#token=${c.token}`);
    await phone.waitFor(`document.querySelector('tr[data-volume="vm1"]')`, 'the vm1 card');
    expect(await phone.eval(`document.documentElement.scrollWidth <= 390`)).toBe(true);
    expect(await phone.eval(`getComputedStyle(document.querySelector('table.volumes thead')).display`)).toBe('none');
    await phone.screenshot(join(shots, 'volumes-phone.png'));
    await phone.eval(`location.hash = '#/volume/vm1'`);
    await phone.waitFor(`document.querySelector('tr[data-snapshot="s1"]')`, 'the s1 card');
    expect(await phone.eval(`document.documentElement.scrollWidth <= 390`)).toBe(true);
    await phone.close();
  });

  it('cannot be used from a page of another origin, even one that knows the token', async () => {
    otherOrigin = http.createServer((_req, res) => res.end('<!doctype html><title>elsewhere</title>'));
    await new Promise<void>((r) => otherOrigin!.listen(0, '127.0.0.1', r));
    const port = (otherOrigin.address() as AddressInfo).port;
    const evil = await browser.newPage(600, 400);
    await evil.goto(`http://127.0.0.1:${port}/`);
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'snapshot.create', params: { volume: 'vm1', name: 'evil' } });
    // With the token: the preflight is refused, so the request is never sent.
    const withToken = await evil.eval<string>(`fetch(${sel(`${c.base}/api/rpc`)}, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ${c.token}' }, body: ${sel(body)} }).then((r) => 'answered ' + r.status, (e) => 'failed: ' + e.name)`);
    expect(withToken).toBe('failed: TypeError');
    // A simple (no-preflight) request goes out, is refused, and its answer is withheld from the page
    // (Cross-Origin-Resource-Policy).
    const simple = await evil.eval<string>(`fetch(${sel(`${c.base}/api/rpc`)}, { method: 'POST', mode: 'no-cors', body: ${sel(body)} }).then((r) => r.type, (e) => 'failed: ' + e.name)`);
    expect(simple).toBe('failed: TypeError');
    // Nor can it read the state stream.
    const events = await evil.eval<string>(`fetch(${sel(`${c.base}/api/events`)}, { headers: { Authorization: 'Bearer ${c.token}' } }).then((r) => 'answered ' + r.status, (e) => 'failed: ' + e.name)`);
    expect(events).toBe('failed: TypeError');
    await evil.close();
    expect((await snapshots('vm1')).map((s) => s.name)).not.toContain('evil');
  });
});
