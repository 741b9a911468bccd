// NOT RUN YET: the lead renames this file to console-schedules.test.ts once the schedule.*
// methods (the sched work) are merged. Until then console-schedules-fake.test.ts runs the same
// steps against a fake server answering the contract.
//
// Schedule editing in the console against the real server: a volume's schedules listed, one
// added through the dialog (a refusal first, shown with its code), an `every` one, and one
// removed after the confirmation; every change checked on the control socket.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, type Page } from '../helpers/cdp.ts';
import { startConsoleServer, type ConsoleServer } from '../helpers/console.ts';
import { tempDir } from '../helpers/server.ts';

const shots = process.env.SNAPNBD_CONSOLE_SHOTS ? resolve(process.env.SNAPNBD_CONSOLE_SHOTS) : mkdtempSync(join(tmpdir(), 'snapnbd-console-shots-'));
mkdirSync(shots, { recursive: true });

let c: ConsoleServer;
let browser: Browser;
let page: Page;
let target: string;

beforeAll(async () => {
  target = tempDir('snapnbd-console-target-');
  c = await startConsoleServer({ args: ['--volume', 'vm1=16M', '--backup-target', `offsite=file://${target}`] });
  browser = await Browser.launch();
  page = await browser.newPage(1280, 900);
});
afterAll(async () => {
  await browser?.close();
  await c?.stop();
  if (target) rmSync(target, { recursive: true, force: true });
});

const sel = (s: string): string => JSON.stringify(s);
async function waitText(selector: string, re: RegExp): Promise<string> {
  return page.waitFor<string>(`(() => { const t = document.querySelector(${sel(selector)})?.innerText ?? ''; return ${re}.test(t) ? t : ''; })()`, `${selector} to match ${re}`);
}
const setField = (name: string, value: string): Promise<unknown> =>
  page.eval(`(() => { const f = document.getElementById('field-${name}'); f.value = ${sel(value)}; f.dispatchEvent(new Event('change')); })()`);

interface Schedule { id: string; volume: string; kind: string; at?: string; every?: string; tz: string; keep: number; backupTo?: string; keepBackups?: number; nextRun: string }
const schedules = async (): Promise<Schedule[]> => (await c.ctl.call<{ schedules: Schedule[] }>('schedule.list', { volume: 'vm1' })).schedules;

describe('schedule editing in the console (real server)', () => {
  it('adds a daily schedule with a backup; a bad time is refused with its code', async () => {
    await page.goto(`${c.base}/#token=${c.token}`);
    await page.eval(`location.hash = '#/volume/vm1'`);
    await waitText('#main', /Schedules[\s\S]*No schedules\./);
    await page.click('[data-key="addsched:vm1"]');
    await setField('when', '2am');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#dialog .error', /\(INVALID_PARAMS\)$/);
    expect(await schedules()).toEqual([]);
    await setField('when', '02:00');
    await setField('keep', '7');
    await setField('backupTo', 'offsite');
    await setField('keepBackups', '30');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Schedule \S+ added: daily at 02:00 \(\S+\), keep 7, back up to offsite \(keep 30\)/);
    const [s] = await schedules();
    expect(s).toMatchObject({ volume: 'vm1', kind: 'daily', at: '02:00', keep: 7, backupTo: 'offsite', keepBackups: 30 });
    await waitText(`tr[data-schedule="${s!.id}"] td[data-label="When"]`, /^daily at 02:00/);
    await page.eval(`document.getElementById('toast').textContent = ''`);
    await page.screenshot(join(shots, 'schedules.png'), true);
  });

  it('adds an every-10-minutes schedule and removes the daily one after the confirmation', async () => {
    await page.click('[data-key="addsched:vm1"]');
    await setField('kind', 'every');
    await setField('when', '10m');
    await setField('keep', '3');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /added: every 10m, keep 3/);
    const [daily, every] = await schedules();
    expect(every).toMatchObject({ kind: 'every', every: '10m', keep: 3 });
    await page.click(`[data-key="delsched:${daily!.id}"]`);
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', new RegExp(`Schedule ${daily!.id} removed`));
    await page.waitFor(`!document.querySelector('tr[data-schedule="${daily!.id}"]')`, 'the row to go');
    expect((await schedules()).map((x) => x.id)).toEqual([every!.id]);
    expect(page.errors).toEqual([]);
  });
});
