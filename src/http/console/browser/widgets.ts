// The controls every page builds with: a keyed button (focus survives a re-render through its
// data-key), a labelled cell (the phone layout shows the label), a table, a volume link.
import { h, type Child } from './dom.ts';

export function button(label: string, key: string, onclick: () => void, cls = 'secondary', aria?: string): HTMLButtonElement {
  return h('button', { type: 'button', class: cls, 'data-key': key, 'aria-label': aria, onclick }, label);
}

export function cell(label: string, ...content: Child[]): HTMLTableCellElement {
  return h('td', { 'data-label': label }, ...content);
}

export function table(cls: string, caption: string, headers: string[], rows: HTMLTableRowElement[]): HTMLTableElement {
  return h('table', { class: `grid ${cls}` },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

export const volumeLink = (name: string): HTMLAnchorElement => h('a', { href: `#/volume/${encodeURIComponent(name)}` }, name);
