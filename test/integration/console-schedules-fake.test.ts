// The console's schedule editing in a real browser, against a fake server that answers the
// schedule.* contract (protocol/control.md, "Schedules": schedule.list/add/remove) the way the
// sched work defines it, so the pages are tested before and whatever the server side is. The fake
// serves the built console (dist/) and answers /api/rpc and /api/events with canned shapes; the
// same steps against the real server are console-schedules.sched.ts (enabled once schedules land).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findAssetDir, loadAssets } from '../../src/http/console/assets.ts';
import type { ConsoleState, ScheduleRow } from '../../src/http/console/wire.d.ts';
import { Browser, type Page } from '../helpers/cdp.ts';

const shots = process.env.SNAPNBD_CONSOLE_SHOTS ? resolve(process.env.SNAPNBD_CONSOLE_SHOTS) : mkdtempSync(join(tmpdir(), 'snapnbd-console-shots-'));
mkdirSync(shots, { recursive: true });

/** The fake server: state, the requests it got, and the open event streams. */
const calls: { method: string; params: Record<string, unknown> }[] = [];
const streams = new Set<http.ServerResponse>();
let nextId = 1;
const state: ConsoleState = {
  at: '2026-11-30T10:00:00Z',
  volumes: [{ name: 'vm1', size: 16 << 20, chunkSize: 65536, backing: null, origin: null, created: '2026-11-30T09:00:00Z', state: 'ready', reason: null, snapshots: 0, referenced: 0, used: 0, written: 0, readOnly: false, connections: 0 }],
  snapshots: { vm1: [] }, clients: {}, targets: [{ name: 'offsite', url: 'file:///backups', encrypted: false, uploadLimit: null }], backups: { offsite: [] }, backupErrors: {}, jobs: [],
  schedules: [{ id: 'sch-old', volume: 'vm1', kind: 'hourly', at: ':15', tz: 'UTC', keep: 24, nextRun: '2026-11-30T10:15:00Z', lastRun: '2026-11-30T09:15:00Z', lastResult: { ok: true, snapshot: 'vm1-20261130T091500Z' } }],
};

function push(): void {
  for (const s of streams) s.write(`event: state\ndata: ${JSON.stringify(state)}\n\n`);
}

/** schedule.* as the contract says; anything else the pages ask for, canned. */
function dispatch(method: string, p: Record<string, unknown>): { result: unknown } | { error: { code: number; message: string; data: { code: string } } } {
  calls.push({ method, params: p });
  const refuse = (code: string, message: string) => ({ error: { code: code === 'INVALID_PARAMS' ? -32602 : -32000, message, data: { code } } });
  switch (method) {
    case 'server.info': return { result: { version: '0.1.0', listeners: [] } };
    case 'volume.history': return { result: { volume: p.name, intervalSeconds: 300, samples: [] } };
    case 'schedule.list': return { result: { schedules: state.schedules } };
    case 'schedule.add': {
      if (p.kind !== 'every' && typeof p.at === 'string' && !/^(:\d\d|\d\d:\d\d|[a-z]{3},\d\d:\d\d|\d+,\d\d:\d\d)$/.test(p.at)) {
        return refuse('INVALID_PARAMS', `schedule.add: "at" '${p.at}' is not a time (daily: 02:00)`);
      }
      const s = { id: `sch${nextId++}`, ...p, tz: (p.tz as string | undefined) ?? 'UTC', nextRun: '2026-12-01T02:00:00Z' } as ScheduleRow;
      state.schedules!.push(s);
      push();
      return { result: s };
    }
    case 'schedule.remove': {
      const i = state.schedules!.findIndex((s) => s.id === p.id);
      if (i < 0) return refuse('SCHEDULE_NOT_FOUND', `no schedule '${String(p.id)}'`);
      state.schedules!.splice(i, 1);
      push();
      return { result: { removed: p.id } };
    }
    default: return refuse('METHOD_NOT_FOUND', `the fake has no ${method}`);
  }
}

let fake: http.Server;
let base: string;
let browser: Browser;
let page: Page;

beforeAll(async () => {
  const assets = loadAssets(findAssetDir(resolve('dist/http/console')));
  fake = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/api/events') {
      res.writeHead(200, { 'Content-Type': 'text/event-stream' });
      streams.add(res);
      res.on('close', () => streams.delete(res));
      push();
      return;
    }
    if (path === '/api/rpc') {
      let body = '';
      req.setEncoding('utf8').on('data', (d: string) => { body += d; }).on('end', () => {
        const r = JSON.parse(body) as { id: number; method: string; params?: Record<string, unknown> };
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: r.id, ...dispatch(r.method, r.params ?? {}) }));
      });
      return;
    }
    const a = assets.get(path);
    if (a === undefined) { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'Content-Type': a.type }).end(a.body);
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
  browser = await Browser.launch();
  page = await browser.newPage(1280, 900);
});
afterAll(async () => {
  for (const s of streams) s.destroy();
  await browser?.close();
  await new Promise((r) => fake?.close(r));
});

const sel = (s: string): string => JSON.stringify(s);
async function waitText(selector: string, re: RegExp): Promise<string> {
  return page.waitFor<string>(`(() => { const t = document.querySelector(${sel(selector)})?.innerText ?? ''; return ${re}.test(t) ? t : ''; })()`, `${selector} to match ${re}`);
}
const setField = (name: string, value: string): Promise<unknown> =>
  page.eval(`(() => { const f = document.getElementById('field-${name}'); f.value = ${sel(value)}; f.dispatchEvent(new Event('change')); })()`);

describe('schedule editing in the console (against the schedule.* contract)', () => {
  it('lists a volume\'s schedules with their next and last runs', async () => {
    await page.goto(`${base}/#token=fake`);
    await page.eval(`location.hash = '#/volume/vm1'`);
    await waitText('tr[data-schedule="sch-old"] td[data-label="When"]', /^hourly at :15 \(UTC\), keep 24$/);
    expect(await page.eval(`document.querySelector('tr[data-schedule="sch-old"] td[data-label="Result"]').innerText`)).toBe('ok: vm1-20261130T091500Z');
  });

  it('adds a schedule: the dialog sends schedule.add in the contract\'s shape, and a refusal shows with its code', async () => {
    await page.click('[data-key="addsched:vm1"]');
    await waitText('#dialog', /New schedule for vm1/);
    expect(await page.eval(`[...document.getElementById('field-backupTo').options].map((o) => o.value)`)).toEqual(['', 'offsite']);
    await setField('when', '2am');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#dialog .error', /"at" '2am' is not a time .*\(INVALID_PARAMS\)$/);
    await setField('when', '02:00');
    await setField('keep', '7');
    await setField('backupTo', 'offsite');
    await setField('keepBackups', '30');
    await page.screenshot(join(shots, 'schedule-add.png'));
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Schedule sch1 added: daily at 02:00 \(UTC\), keep 7, back up to offsite \(keep 30\)/);
    expect(calls.filter((c) => c.method === 'schedule.add').map((c) => c.params)).toEqual([
      { volume: 'vm1', kind: 'daily', at: '2am', keep: 7 },
      { volume: 'vm1', kind: 'daily', at: '02:00', keep: 7, backupTo: 'offsite', keepBackups: 30 },
    ]);
    await waitText('tr[data-schedule="sch1"] td[data-label="Next run"]', /^\d{4}-12-01 /);
    await page.eval(`document.getElementById('toast').textContent = ''`);
    await page.screenshot(join(shots, 'schedules.png'), true);
  });

  it('an `every` schedule needs how often, and says so before asking the server', async () => {
    const before = calls.length;
    await page.click('[data-key="addsched:vm1"]');
    await setField('kind', 'every');
    await setField('when', '');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#dialog .error', /every: how often, e\.g\. 30m \(INVALID_INPUT\)/);
    expect(calls.length).toBe(before);
    await setField('when', '10m');
    await page.click('[data-key="dialog-confirm"]');
    await waitText('tr[data-schedule="sch2"] td[data-label="When"]', /^every 10m, keep 7$/);
    expect(calls[calls.length - 1]).toEqual({ method: 'schedule.add', params: { volume: 'vm1', kind: 'every', every: '10m', keep: 7 } });
  });

  it('removes a schedule after the confirmation', async () => {
    await page.click('[data-key="delsched:sch-old"]');
    await waitText('#dialog', /Remove schedule sch-old\?[\s\S]*snapshots it took are kept/);
    await page.click('[data-key="dialog-confirm"]');
    await waitText('#toast', /Schedule sch-old removed/);
    await page.waitFor(`!document.querySelector('tr[data-schedule="sch-old"]')`, 'the row to go');
    expect(calls.filter((c) => c.method === 'schedule.remove').map((c) => c.params)).toEqual([{ id: 'sch-old' }]);
    expect(page.errors).toEqual([]);
  });
});
