// The console's entry point: takes the token from the login link's fragment (then removes it
// from the address bar), follows the state stream, routes by the fragment (#/ and #/volume/NAME)
// and re-renders the page when the state or the route changes, keeping keyboard focus in place.
import * as actions from './actions.ts';
import { AuthFailure, clearToken, followEvents, getToken, rpc, setToken } from './api.ts';
import { setDialogHooks } from './dialogs.ts';
import { loadDiff } from './diff.ts';
import { h } from './dom.ts';
import type { ConsoleState, ServerInfo } from './model.ts';
import { loginPage, volumePage, volumesPage, type DiffView, type ViewActions } from './views.ts';

/** How long a message stays in the status line. */
const TOAST_MS = 8000;

let state: ConsoleState | null = null;
let server: ServerInfo | null = null;
let diff: DiffView | null = null;
let stopEvents: (() => void) | null = null;
let toastTimer: number | undefined;

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

function route(): { page: 'volumes' } | { page: 'volume'; name: string } {
  const m = /^#\/volume\/(.+)$/.exec(location.hash);
  return m ? { page: 'volume', name: decodeURIComponent(m[1]!) } : { page: 'volumes' };
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
  else if (r.page === 'volume') nodes = volumePage(state, r.name, server, diff, viewActions);
  else nodes = volumesPage(state, viewActions);
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
