// Building DOM nodes without HTML strings (nothing from the server is ever parsed as markup).
import { stateText } from './text.ts';

export { formatSize, formatTime, plural, stateText } from './text.ts';

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

/** A state badge; its class (for colour) comes from the first word, the text (or `text`) says it all. */
export function stateBadge(state: unknown, progress?: unknown, text?: string): HTMLElement {
  const said = stateText(state, progress);
  const word = /^[a-z-]+/i.exec(said)?.[0]?.toLowerCase() ?? 'unknown';
  return h('span', { class: `state state-${word}` }, text ?? said);
}
