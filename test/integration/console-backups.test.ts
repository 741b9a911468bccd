// The web console's backups, connected clients and space history in a real browser (headless
// chromium over test/helpers/cdp.ts) against the real server with a file:// backup target:
// back up a snapshot and watch its state move from `backing-up N%` to `backed-up`, see the
// backups with their sizes and reused blocks, restore one into a new volume (and `instant` sent
// only when ticked), delete one after the confirmation, see who is connected (address; the TLS
// identity column is checked in test/unit/console-watch.test.ts, since a TLS server may serve
// the console itself over HTTPS), and the space-over-time chart drawn from volume.history.
// Screenshots as in console-browser.test.ts ($SNAPNBD_CONSOLE_SHOTS).
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, type Page } from '../helpers/cdp.ts';
import { startConsoleServer, type ConsoleServer } from '../helpers/console.ts';
import { NbdTestClient } from '../helpers/control-nbd.ts';
import { tempDir } from '../helpers/server.ts';

const MiB = 1024 * 1024;
/** Enough data, sent at UPLOAD_LIMIT, that the backup takes about three seconds on any machine,
 *  so its progress shows between 0 and 100 (unlimited, a fast machine sends it between two polls). */
const DATA_MIB = 96;
const UPLOAD_LIMIT = '32M';
const shots = process.env.SNAPNBD_CONSOLE_SHOTS ? resolve(process.env.SNAPNBD_CONSOLE_SHOTS) : mkdtempSync(join(tmpdir(), 'snapnbd-console-shots-'));
mkdirSync(shots, { recursive: true });

let c: ConsoleServer;
let browser: Browser;
let page: Page;
let target: string;

beforeAll(async () => {
  target = tempDir('snapnbd-console-target-');
  c = await startConsoleServer({
    args: ['--volume', 'vm1=128M', '--backup-target', `local=file://${target}?upload-limit=${UPLOAD_LIMIT}`, '--history-interval', '1'],
  });
  browser = await Browser.launch();
  page = await browser.newPage(1280, 900);
  // Every request body the page sends, to see exactly what the console asked the server.
  await page.call('Page.addScriptToEvaluateOnNewDocument', {
    source: `window.__sent = []; const f = window.fetch; window.fetch = (u, o) => { if (o && o.body) window.__sent.push(JSON.parse(o.body)); return f(u, o); };`,
  });
});
afterAll(async () => {
  await browser?.close();
  await c?.stop();
  if (target) rmSync(target, { recursive: true, force: true });
});

const sel = (s: string): string => JSON.stringify(s);
const text = (selector: string): Promise<string> => page.eval<string>(`document.querySelector(${sel(selector)})?.innerText ?? ''`);

async function waitText(selector: string, re: RegExp): Promise<string> {
  return page.waitFor<string>(`(() => { const t = document.querySelector(${sel(selector)})?.innerText ?? ''; return ${re}.test(t) ? t : ''; })()`, `${selector} to match ${re}`, 60_000);
}

interface Backup { id: string; snapshot: string; state: string; blocksReused: number; blocks: number; size: number }
const backups = async (): Promise<Backup[]> => (await c.ctl.call<{ backups: Backup[] }>('backup.list', { target: 'local' })).backups;
const sent = async (method: string): Promise<Record<string, unknown>[]> =>
  (await page.eval<{ method: string; params: Record<string, unknown> }[]>('window.__sent')).filter((r) => r.method === method).map((r) => r.params);

/** A hash of one MiB every 8 MiB (the data is random: any wrong block shows). */
async function sha(exportName: string, length: number): Promise<string> {
  const h = await NbdTestClient.connect(c.server.port, exportName);
  try {
    const hash = createHash('sha256');
    for (let off = 0; off < length; off += 8 * MiB) hash.update(await h.read(off, MiB));
    return hash.digest('hex');
  } finally {
    await h.disconnect();
  }
}

describe('backups, clients and space history in the console', () => {
  it('backs up a snapshot and shows its progress move from backing-up to backed-up', async () => {
    const h = await NbdTestClient.connect(c.server.port, 'vm1');
    for (let i = 0; i < DATA_MIB; i++) await h.write(i * MiB, randomBytes(MiB));
    await h.flush();
    await h.disconnect();
    await c.ctl.call('snapshot.create', { volume: 'vm1', name: 's1' });
    await page.goto(`${c.base}/#token=${c.token}`);
    await page.eval(`location.hash = '#/volume/vm1'`);
    await waitText('tr[data-snapshot="s1"] td[data-label="State"]', /^ready$/);
    // Every text the state cell shows, as it changes.
    await page.eval(`window.__states = []; new MutationObserver(() => {
      const t = document.querySelector('tr[data-snapshot="s1"] td[data-label="State"]')?.innerText;
      if (t && window.__states[window.__states.length - 1] !== t) window.__states.push(t);
    }).observe(document.getElementById('main'), { childList: true, subtree: true, characterData: true })`);
    await page.click('[data-key="backup:vm1@s1"]');
    await waitText('#dialog', /Back up vm1@s1/);
    expect(await page.eval(`document.getElementById('field-target').value`)).toBe('local');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Backing up vm1@s1 to local \(job j\d+\)/);
    await waitText('tr[data-snapshot="s1"] td[data-label="State"]', /^backed-up$/);
    const states = await page.eval<string[]>('window.__states');
    const percents = states.map((s) => /^backing-up (\d+)%$/.exec(s)?.[1]).filter((p) => p !== undefined).map(Number);
    expect(states[states.length - 1]).toBe('backed-up');
    // It moved: several percentages shown (about three seconds at the upload limit, the console
    // watching every quarter second while busy), rising, before backed-up.
    console.log(`states shown: ${states.join(' → ')}`);
    expect(new Set(percents).size, states.join(' → ')).toBeGreaterThan(3);
    expect([...percents].sort((a, b) => a - b)).toEqual(percents);
    expect(await sent('backup.create')).toEqual([{ target: 'local', volume: 'vm1', snapshot: 's1' }]);
  });

  it('lists the backups per target with size and reused blocks', async () => {
    // A second backup after a small change reuses every other block.
    const h = await NbdTestClient.connect(c.server.port, 'vm1');
    await h.write(0, Buffer.alloc(64 * 1024, 0x5a));
    await h.flush();
    await h.disconnect();
    await c.ctl.call('snapshot.create', { volume: 'vm1', name: 's2' });
    await c.ctl.call('backup.create', { target: 'local', volume: 'vm1', snapshot: 's2', wait: true });
    const [b1, b2] = await backups();
    expect(b2!.blocksReused).toBeGreaterThan(0);
    await page.eval(`location.hash = '#/backups'`);
    await waitText(`tr[data-backup="${b2!.id}"] td[data-label="State"]`, /^backed-up$/);
    expect(await text(`section[data-target="local"] h2`)).toMatch(/^local file:\/\/\S+ \(uploads up to 32 MiB\/s\)$/);
    expect(await text(`tr[data-backup="${b1!.id}"] td[data-label="Of"]`)).toBe('vm1@s1');
    expect(await text(`tr[data-backup="${b1!.id}"] td[data-label="Size"]`)).toBe('128 MiB');
    expect(await text(`tr[data-backup="${b2!.id}"] td[data-label="Blocks reused"]`)).toBe(`${b2!.blocksReused} of ${b2!.blocks}`);
    expect(await text(`tr[data-backup="${b2!.id}"] td[data-label="Base"]`)).toBe(b1!.id);
    // The jobs: both backups, done.
    await waitText('table.jobs', /backup[\s\S]*done/);
    await page.screenshot(join(shots, 'backups.png'), true);
  });

  it('restores a backup into a new volume; `instant` is sent only when ticked', async () => {
    const [b1] = await backups();
    await page.click(`[data-key="restore:local:${b1!.id}"]`);
    await waitText('#dialog', /Restore backup/);
    await page.eval(`document.getElementById('field-volume').value = 'vm1-copy'`);
    await page.screenshot(join(shots, 'restore.png'));
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Restoring .* into vm1-copy \(job j\d+\)/);
    expect(await sent('backup.restore')).toEqual([{ target: 'local', id: b1!.id, volume: 'vm1-copy' }]);
    await waitText('table.jobs tbody tr:first-child', /restore[\s\S]*vm1-copy[\s\S]*done/);
    expect(await sha('vm1-copy', 128 * MiB)).toBe(await sha('vm1@s1', 128 * MiB));

    // Ticked: the field goes out; what the server says (it may not know `instant`) shows as it is.
    await page.click(`[data-key="restore:local:${b1!.id}"]`);
    await page.eval(`document.getElementById('field-volume').value = 'vm1-instant'`);
    await page.eval(`document.getElementById('field-instant').click()`);
    await page.click('[data-key="dialog-confirm"]');
    const outcome = await page.waitFor<string>(`document.querySelector('#dialog .error:not([hidden])')?.innerText || (document.getElementById('toast').innerText.includes('vm1-instant') && 'ok')`, 'the instant restore to answer');
    expect((await sent('backup.restore'))[1]).toEqual({ target: 'local', id: b1!.id, volume: 'vm1-instant', instant: true });
    if (outcome !== 'ok') {
      expect(outcome).toMatch(/\([A-Z_]+\)$/);
      expect(await page.eval(`document.getElementById('dialog').open`)).toBe(true);
      await page.click('[data-key="dialog-cancel"]');
    }
  });

  it('deletes a backup after the confirmation', async () => {
    const [, b2] = await backups();
    await page.eval(`location.hash = '#/backups'`);
    await page.click(`[data-key="delbackup:local:${b2!.id}"]`);
    await waitText('#dialog', new RegExp(`Delete backup ${b2!.id}\\?`));
    expect(await page.eval(`document.activeElement.dataset.key`)).toBe('dialog-cancel');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', new RegExp(`Backup ${b2!.id} deleted from local`));
    await page.waitFor(`!document.querySelector('tr[data-backup="${b2!.id}"]')`, 'the deleted backup to go');
    expect((await backups()).map((b) => b.id)).not.toContain(b2!.id);
    expect(await sent('backup.delete')).toEqual([{ target: 'local', id: b2!.id }]);
  });

  it('shows who is connected to a volume and its snapshots: address and export', async () => {
    const head = await NbdTestClient.connect(c.server.port, 'vm1');
    const snap = await NbdTestClient.connect(c.server.port, 'vm1@s1');
    try {
      await page.eval(`location.hash = '#/volume/vm1'`);
      await page.waitFor(`document.querySelectorAll('table.clients tbody tr').length === 2`, 'two clients');
      const rows = await page.eval<string[][]>(`[...document.querySelectorAll('table.clients tbody tr')].map((r) => [...r.cells].map((c) => c.innerText))`);
      expect(rows.sort((a, b) => (a[3]! < b[3]! ? -1 : 1))).toEqual([
        [expect.stringMatching(/^127\.0\.0\.1:\d+$/), '—', 'no', 'vm1'],
        [expect.stringMatching(/^127\.0\.0\.1:\d+$/), '—', 'no', 'vm1@s1'],
      ]);
    } finally {
      await head.disconnect();
      await snap.disconnect();
    }
    await waitText('#main', /No NBD clients connected\./);
  });

  it('draws the space used over time from volume.history, a point per sample', async () => {
    await page.eval(`location.hash = '#/volume/vm1'`);
    // Sampled every second here: at least two samples by now, and the chart reads them again as they grow.
    await page.waitFor(`document.querySelectorAll('svg.history circle.series-used').length >= 3`, 'three points');
    // One look at the chart (it is redrawn as samples arrive): one point per sample in each series,
    // and the line goes through them.
    const chart = await page.eval<{ summary: string; circles: number[]; lines: number[] }>(`(() => ({
      summary: document.getElementById('history-summary').innerText,
      circles: ['used', 'referenced', 'written'].map((k) => document.querySelectorAll('svg.history circle.series-' + k).length),
      lines: ['used', 'referenced', 'written'].map((k) => document.querySelector('svg.history polyline.series-' + k).getAttribute('points').split(' ').length),
    }))()`);
    const n = chart.circles[0]!;
    expect(chart.circles).toEqual([n, n, n]);
    expect(chart.lines).toEqual([n, n, n]);
    expect(chart.summary).toMatch(new RegExp(`${n} samples from .* now .* used, .* referenced, .* written`));
    const hist = await c.ctl.call<{ samples: unknown[] }>('volume.history', { name: 'vm1' });
    expect(hist.samples.length).toBeGreaterThanOrEqual(n);
    // The referenced line is at the top of the chart's scale (128 MiB of data written), not flat at zero.
    const ys = await page.eval<number[]>(`[...document.querySelectorAll('svg.history circle.series-referenced')].map((p) => +p.getAttribute('cy'))`);
    expect(Math.min(...ys)).toBeLessThan(160 / 2);
    await page.eval(`document.getElementById('toast').textContent = ''`);
    await page.screenshot(join(shots, 'volume-history.png'), true);
    expect(page.errors).toEqual([]);
  });

  it('keeps drawing new samples while nothing else changes (an idle server sends no state)', async () => {
    await page.eval(`location.hash = '#/volume/vm1'`);
    const count = `document.querySelectorAll('svg.history circle.series-used').length`;
    await page.waitFor(`${count} >= 1`, 'the chart');
    const n = await page.eval<number>(count);
    // The console reads the history again every 5 s at the least; two periods are plenty.
    await page.waitFor(`${count} > ${n}`, 'a new sample on an idle page', 15_000);
  });
});
