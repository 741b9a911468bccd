// The console's only ways to the server: JSON-RPC requests to /api/rpc (the control methods,
// exactly as the socket takes them) and the /api/events state stream. The token is kept in this
// tab's sessionStorage and sent as a Bearer header; the server sets no cookies.
import { SseParser } from './sse.ts';

const TOKEN_KEY = 'snapnbd.console.token';
/** Wait before reopening a dropped event stream. */
export const RECONNECT_MS = 2000;

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The server refused the token: the user must log in again. */
export class AuthFailure extends Error {}

/** A control method (or the HTTP layer) refused: `code` is error.data.code, e.g. VOLUME_BUSY. */
export class RpcFailure extends Error {
  readonly code: string;
  readonly data: Record<string, unknown>;
  constructor(code: string, message: string, data: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

interface ErrorBody {
  error?: { code?: unknown; message?: unknown; data?: { code?: unknown } & Record<string, unknown> };
  result?: unknown;
}

let nextId = 1;

function authHeaders(): Record<string, string> {
  return { Authorization: `Bearer ${getToken() ?? ''}` };
}

export async function rpc<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
  const res = await fetch('/api/rpc', {
    method: 'POST',
    headers: { ...authHeaders(), 'Content-Type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params }),
    cache: 'no-store',
  });
  const body = (await res.json().catch(() => ({}))) as ErrorBody;
  if (res.status === 401) throw new AuthFailure(String(body.error?.message ?? 'the console token was refused'));
  const err = body.error;
  if (err !== undefined) {
    const code = typeof err.data?.code === 'string' ? err.data.code : String(err.code ?? `HTTP_${res.status}`);
    throw new RpcFailure(code, String(err.message ?? 'request failed'), err.data ?? {});
  }
  if (!res.ok) throw new RpcFailure(`HTTP_${res.status}`, res.statusText);
  return body.result as T;
}

export interface EventHandlers {
  state(value: unknown): void;
  live(on: boolean): void;
  auth(): void;
}

/** Follows /api/events until stopped, reopening it when it drops. Returns stop. */
export function followEvents(h: EventHandlers): () => void {
  const abort = new AbortController();
  void (async () => {
    while (!abort.signal.aborted) {
      try {
        const res = await fetch('/api/events', { headers: authHeaders(), signal: abort.signal, cache: 'no-store' });
        if (res.status === 401) {
          h.auth();
          return;
        }
        if (!res.ok || res.body === null) throw new Error(`HTTP ${res.status}`);
        h.live(true);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        const parser = new SseParser();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          for (const ev of parser.push(value)) if (ev.event === 'state') h.state(JSON.parse(ev.data));
        }
      } catch {
        // dropped, or the server is restarting: try again shortly
      }
      if (abort.signal.aborted) return;
      h.live(false);
      await new Promise((r) => setTimeout(r, RECONNECT_MS));
    }
  })();
  return () => abort.abort();
}
