// Building DOM nodes without HTML strings (nothing from the server is ever parsed as markup),
// and the few formats the pages share.

type Attr = string | number | boolean | undefined | ((e: Event) => void);
export type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, Attr> = {}, ...children: (Child | Child[])[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, Attr> = {}, ...children: Child[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

function setAttrs(el: Element, attrs: Record<string, Attr>): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function formatSize(bytes: number): string {
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2).replace(/\.?0+$/, '')} ${UNITS[i]}`;
}

/** `2026-11-30 07:40:12` in the browser's time zone. */
export function formatTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * Any state as text: a string as it is, an object's `state` (with `reason` when it failed), and a
 * `progress` (0..1 or a percentage) appended. States this page has never heard of still show.
 */
export function stateText(state: unknown, progress?: unknown): string {
  let text: string;
  if (state === undefined || state === null) text = '—';
  else if (typeof state === 'string' || typeof state === 'number' || typeof state === 'boolean') text = String(state);
  else if (typeof state === 'object') {
    const o = state as Record<string, unknown>;
    if (o.state !== undefined) return stateText(o.state, o.progress ?? progress) + (typeof o.reason === 'string' ? `: ${o.reason}` : '');
    text = JSON.stringify(state);
  } else text = String(state);
  if (typeof progress === 'number' && Number.isFinite(progress) && !text.includes('%')) {
    const pct = progress <= 1 ? progress * 100 : progress;
    text += ` ${Math.floor(pct)}%`;
  }
  return text;
}

/** A state badge; its class (for colour) comes from the first word, the text says it all. */
export function stateBadge(state: unknown, progress?: unknown): HTMLElement {
  const text = stateText(state, progress);
  const word = /^[a-z-]+/i.exec(text)?.[0]?.toLowerCase() ?? 'unknown';
  return h('span', { class: `state state-${word}` }, text);
}
