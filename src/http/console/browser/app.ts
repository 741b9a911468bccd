// The console's entry point: takes the token from the login link's fragment (then removes it
// from the address bar), follows the state stream, routes by the fragment (#/, #/volume/NAME,
// #/backups) and re-renders the page when the state or the route changes, keeping keyboard focus
// in place. A volume page reads its space history (volume.history) when shown and as it grows.
import * as actions from './actions.ts';
import { AuthFailure, clearToken, followEvents, getToken, rpc, setToken } from './api.ts';
import * as backupActions from './backup-actions.ts';
import { backupsPage, type BackupActions } from './backups-view.ts';
import { setDialogHooks } from './dialogs.ts';
import { loadDiff } from './diff.ts';
import { h } from './dom.ts';
import type { ConsoleState, HistoryView, ServerInfo } from './model.ts';
import * as scheduleActions from './schedule-actions.ts';
import { loginPage, volumePage, volumesPage, type DiffView, type HistoryState, type ViewActions } from './views.ts';

/** How long a message stays in the status line. */
const TOAST_MS = 8000;
/** A shown history is read again after its sampling interval, but not more often than this. */
const HISTORY_REFRESH_MIN_MS = 5000;

let state: ConsoleState | null = null;
let server: ServerInfo | null = null;
let diff: DiffView | null = null;
type LoadedHistory = HistoryState & { loadedAt: number; loading: boolean };
let hist: LoadedHistory | null = null;
let stopEvents: (() => void) | null = null;
let toastTimer: number | undefined;
/** Reads a shown history again when it is due, whether or not the state stream says anything. */
let historyTimer: number | undefined;

const main = (): HTMLElement => document.getElementById('main')!;

function toast(text: string): void {
  const t = document.getElementById('toast')!;
  t.textContent = text;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => { t.textContent = ''; }, TOAST_MS);
}

function setLive(text: string, on: boolean): void {
  const l = document.getElementById('live')!;
  l.textContent = text;
  l.className = on ? 'live on' : 'live';
}

const viewActions: ViewActions = {
  backUp: (s) => backupActions.backUp(s, state?.targets ?? []),
  addSchedule: (volume) => scheduleActions.addSchedule(volume, state?.targets ?? []),
  removeSchedule: scheduleActions.removeSchedule,
  takeSnapshot: actions.takeSnapshot,
  deleteVolume: actions.deleteVolume,
  rollback: actions.rollback,
  clone: actions.cloneSnapshot,
  deleteSnapshot: actions.deleteSnapshot,
  copyUri: (uri) => void actions.copyUri(uri, toast),
  showDiff(volume, from, to) {
    const size = state?.volumes.find((v) => v.name === volume)?.size ?? 0;
    const mine: DiffView = { volume, from, to, result: null, error: null };
    diff = mine;
    render();
    loadDiff(volume, from, to, size).then(
      (r) => { mine.result = r; },
      (e: unknown) => {
        if (e instanceof AuthFailure) return logout('The console token was refused; log in again.');
        mine.error = `${(e as Error).message}${(e as { code?: string }).code ? ` (${(e as { code: string }).code})` : ''}`;
      },
    ).finally(() => { if (diff === mine) render(); });
  },
};

const backupViewActions: BackupActions = {
  restoreBackup: backupActions.restoreBackup,
  deleteBackup: backupActions.deleteBackup,
  cancelJob: backupActions.cancelJob,
};

function route(): { page: 'volumes' } | { page: 'backups' } | { page: 'volume'; name: string } {
  if (location.hash === '#/backups') return { page: 'backups' };
  const m = /^#\/volume\/(.+)$/.exec(location.hash);
  return m ? { page: 'volume', name: decodeURIComponent(m[1]!) } : { page: 'volumes' };
}

/** How long a loaded history stays current: its sampling interval, within the floor. */
function historyPeriodMs(h: LoadedHistory): number {
  return Math.max(HISTORY_REFRESH_MIN_MS, (h.data?.intervalSeconds ?? 0) * 1000);
}

/** Reads the volume's history when its page shows another volume's, or its own is due again. */
function refreshHistory(volume: string): void {
  if (hist !== null && hist.volume === volume) {
    if (hist.loading || Date.now() - hist.loadedAt < historyPeriodMs(hist)) return;
  }
  const mine: LoadedHistory = { volume, data: hist?.volume === volume ? hist.data : null, error: null, loadedAt: Date.now(), loading: true };
  hist = mine;
  rpc<HistoryView>('volume.history', { name: volume }).then(
    (d) => { mine.data = d; mine.error = null; },
    (e: unknown) => {
      if (e instanceof AuthFailure) return logout('The console token was refused; log in again.');
      mine.error = `${(e as Error).message}${(e as { code?: string }).code ? ` (${(e as { code: string }).code})` : ''}`;
    },
  ).finally(() => {
    mine.loading = false;
    mine.loadedAt = Date.now();
    if (hist !== mine) return;
    render();
    // An idle server sends no state, so nothing else would render the page when the history is due.
    window.clearTimeout(historyTimer);
    historyTimer = window.setTimeout(() => {
      const r = route();
      if (hist === mine && r.page === 'volume' && r.name === mine.volume) render();
    }, historyPeriodMs(mine));
  });
}

function render(): void {
  if (getToken() === null) return;
  // Not under an open dialog: closing it gives focus back to the button that opened it, which
  // must still be in the page. The dialog's close event renders what arrived meanwhile.
  if ((document.getElementById('dialog') as HTMLDialogElement).open) return;
  const focused = (document.activeElement as HTMLElement | null)?.dataset?.key;
  const r = route();
  let nodes: Node[];
  if (state === null) nodes = [h('p', { 'aria-busy': 'true' }, 'Loading…')];
  else if (r.page === 'volume') {
    refreshHistory(r.name);
    nodes = volumePage(state, r.name, server, diff, hist, viewActions);
  } else if (r.page === 'backups') nodes = backupsPage(state, backupViewActions);
  else nodes = volumesPage(state, viewActions);
  for (const a of document.querySelectorAll<HTMLAnchorElement>('nav a')) {
    if (a.getAttribute('href') === (r.page === 'backups' ? '#/backups' : '#/')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main().replaceChildren(...nodes);
  if (focused !== undefined) {
    const again = main().querySelector<HTMLElement>(`[data-key="${CSS.escape(focused)}"]`);
    again?.focus();
  }
}

function showLogin(message: string | null): void {
  document.body.classList.add('logged-out');
  main().replaceChildren(...loginPage(message, (token) => {
    setToken(token);
    void start();
  }));
  document.getElementById('token')?.focus();
}

function logout(message: string | null): void {
  stopEvents?.();
  stopEvents = null;
  clearToken();
  state = null;
  server = null;
  diff = null;
  hist = null;
  setLive('signed out', false);
  showLogin(message);
}

async function start(): Promise<void> {
  try {
    server = await rpc<ServerInfo>('server.info');
  } catch (e) {
    if (e instanceof AuthFailure) return logout('That token was refused.');
    return showLogin(`Cannot reach the server: ${(e as Error).message}`);
  }
  document.body.classList.remove('logged-out');
  document.getElementById('version')!.textContent = `v${server.version}`;
  render();
  stopEvents?.();
  setLive('connecting…', false);
  stopEvents = followEvents({
    state(s) {
      state = s as ConsoleState;
      render();
    },
    live(on) { setLive(on ? 'live' : 'reconnecting…', on); },
    auth() { logout('The console token was refused; log in again.'); },
  });
}

function boot(): void {
  setDialogHooks({ toast, authFailed: () => logout('The console token was refused; log in again.') });
  const m = /^#token=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (m) {
    setToken(m[1]!);
    history.replaceState(null, '', `${location.pathname}#/`); // out of the address bar and history
  }
  window.addEventListener('hashchange', render);
  document.getElementById('dialog')!.addEventListener('close', render);
  document.getElementById('logout')!.addEventListener('click', () => logout(null));
  if (getToken() === null) showLogin(null);
  else void start();
}

boot();
