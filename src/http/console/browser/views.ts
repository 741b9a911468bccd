// The pages, built from the latest state: the volume list (with any backup, job and schedule
// lists the server has), one volume with its snapshots and the picture of what changed, and the
// login form. Every control is a button or a link, so the keyboard reaches all of them.
import { type DiffResult, diffStrip } from './diff.ts';
import { formatSize, formatTime, h, plural, stateBadge, stateText, type Child } from './dom.ts';
import { nbdUri, volumeState, type ConsoleState, type ServerInfo, type Snapshot, type Volume } from './model.ts';

export interface DiffView {
  volume: string;
  from: string;
  to: string | null;
  result: DiffResult | null;
  error: string | null;
}

export interface ViewActions {
  takeSnapshot(volume: string): void;
  deleteVolume(v: Volume, snaps: Snapshot[]): void;
  rollback(v: Volume, s: Snapshot): void;
  clone(s: Snapshot): void;
  deleteSnapshot(s: Snapshot): void;
  copyUri(uri: string): void;
  showDiff(volume: string, from: string, to: string | null): void;
}

function button(label: string, key: string, onclick: () => void, cls = 'secondary', aria?: string): HTMLButtonElement {
  return h('button', { type: 'button', class: cls, 'data-key': key, 'aria-label': aria, onclick }, label);
}

function cell(label: string, ...content: Child[]): HTMLTableCellElement {
  return h('td', { 'data-label': label }, ...content);
}

function table(cls: string, caption: string, headers: string[], rows: HTMLTableRowElement[]): HTMLTableElement {
  return h('table', { class: `grid ${cls}` },
    h('caption', { class: 'visually-hidden' }, caption),
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rows));
}

const volumeLink = (name: string): HTMLAnchorElement => h('a', { href: `#/volume/${encodeURIComponent(name)}` }, name);

export function volumesPage(state: ConsoleState, act: ViewActions): Node[] {
  const rows = state.volumes.map((v) => {
    const snaps = state.snapshots[v.name] ?? [];
    return h('tr', { 'data-volume': v.name },
      cell('Name', h('strong', {}, volumeLink(v.name))),
      cell('Size', formatSize(v.size)),
      cell('Used', formatSize(v.used)),
      cell('Referenced', formatSize(v.referenced)),
      cell('Written', formatSize(v.written)),
      cell('Snapshots', String(v.snapshots)),
      cell('Clients', String(v.connections)),
      cell('Origin', originText(v)),
      cell('State', stateBadge(volumeState(v, snaps), v.progress)),
      cell('Actions', h('div', { class: 'actions' },
        button('Take snapshot', `snap:${v.name}`, () => act.takeSnapshot(v.name), 'primary', `Take a snapshot of ${v.name}`),
        button('Delete', `delvol:${v.name}`, () => act.deleteVolume(v, snaps), 'danger', `Delete volume ${v.name}`))));
  });
  return [
    h('h1', {}, 'Volumes'),
    rows.length === 0
      ? h('p', {}, 'No volumes. Create one with snapnbd volume create NAME --size SIZE.')
      : table('volumes', 'Volumes', ['Name', 'Size', 'Used', 'Referenced', 'Written', 'Snapshots', 'Clients', 'Origin', 'State', 'Actions'], rows),
    ...Object.entries(state.lists).map(([method, result]) => genericList(method, result)),
  ];
}

function originText(v: Volume): Child {
  if (v.origin !== null) return h('span', {}, 'clone of ', volumeLink(v.origin.volume), `@${v.origin.snapshot}`);
  if (v.backing !== null) return h('span', { class: 'path' }, v.backing);
  return '—';
}

export function volumePage(state: ConsoleState, name: string, server: ServerInfo | null, diff: DiffView | null, act: ViewActions): Node[] {
  const back = h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Volumes'));
  const v = state.volumes.find((x) => x.name === name);
  if (v === undefined) return [back, h('h1', {}, name), h('p', {}, `There is no volume ${name} (any more).`)];
  const snaps = state.snapshots[name] ?? [];
  const headUri = nbdUri(server, v.name, location.hostname);
  const facts: [string, Child][] = [
    ['State', stateBadge(volumeState(v, snaps), v.progress)],
    ['Size', `${formatSize(v.size)} (chunks of ${formatSize(v.chunkSize)})`],
    ['Used', `${formatSize(v.used)} by it alone, ${formatSize(v.referenced)} referenced, ${formatSize(v.written)} written since its last snapshot`],
    ['Clients', v.connections > 0 ? `${plural(v.connections, 'NBD connection')} to the volume` : 'none'],
    ['Origin', originText(v)],
    ['Created', formatTime(v.created)],
    ['Export', headUri ?? '—'],
  ];
  const rows = snaps.map((s, i) => {
    const next = snaps[i + 1]?.name ?? null;
    const uri = nbdUri(server, `${s.volume}@${s.name}`, location.hostname);
    const id = `${s.volume}@${s.name}`;
    return h('tr', { 'data-snapshot': s.name },
      cell('Name', h('strong', {}, s.name)),
      cell('Created', formatTime(s.created)),
      cell('Description', s.description || '—'),
      cell('State', stateBadge(s.state, s.progress)),
      cell('Used', formatSize(s.used)),
      cell('Written', formatSize(s.written)),
      cell('Exported', s.connections > 0 ? `yes (${plural(s.connections, 'client')})` : 'no'),
      cell('Clones', s.clones.length > 0 ? h('span', {}, ...s.clones.flatMap((c, j) => [j > 0 ? ', ' : '', volumeLink(c)])) : '—'),
      cell('Actions', h('div', { class: 'actions' },
        button('Roll back', `rollback:${id}`, () => act.rollback(v, s), 'danger', `Roll back ${v.name} to ${s.name}`),
        button('Clone', `clone:${id}`, () => act.clone(s), 'secondary', `Clone ${id}`),
        button('Changes', `diff:${id}`, () => act.showDiff(v.name, s.name, next), 'secondary', `Changes from ${s.name} to ${next ?? 'the live volume'}`),
        uri === null ? null : button('Copy URI', `uri:${id}`, () => act.copyUri(uri), 'secondary', `Copy the nbd URI of ${id}`),
        button('Delete', `delsnap:${id}`, () => act.deleteSnapshot(s), 'danger', `Delete snapshot ${id}`))));
  });
  return [
    back,
    h('h1', {}, v.name),
    h('dl', { class: 'facts' }, facts.flatMap(([k, val]) => [h('dt', {}, k), h('dd', {}, val)])),
    h('div', { class: 'actions' },
      button('Take snapshot', `snap:${v.name}`, () => act.takeSnapshot(v.name), 'primary'),
      headUri === null ? null : button('Copy URI', `uri:${v.name}`, () => act.copyUri(headUri)),
      button('Delete volume', `delvol:${v.name}`, () => act.deleteVolume(v, snaps), 'danger')),
    h('h2', {}, 'Snapshots'),
    rows.length === 0
      ? h('p', {}, 'No snapshots yet.')
      : table('snapshots', `Snapshots of ${v.name}`, ['Name', 'Created', 'Description', 'State', 'Used', 'Written', 'Exported', 'Clones', 'Actions'], rows),
    h('h2', {}, 'Changes'),
    diffSection(diff !== null && diff.volume === v.name ? diff : null),
  ];
}

function diffSection(d: DiffView | null): Node {
  if (d === null) return h('p', {}, 'Choose Changes on a snapshot to see what changed since it.');
  if (d.error !== null) return h('p', { class: 'error', role: 'alert' }, d.error);
  if (d.result === null) return h('p', { 'aria-busy': 'true' }, `Reading the changes from ${d.from}…`);
  return diffStrip(d.result);
}

/** A list method's result as a table: any array in it, every simple field a column, states as text. */
function genericList(method: string, result: unknown): Node {
  const title = method.replace(/\.list$/, '');
  const heading = `${title.charAt(0).toUpperCase()}${title.slice(1)}s`;
  const items = Array.isArray(result)
    ? result
    : Object.values((result ?? {}) as Record<string, unknown>).find(Array.isArray) ?? [];
  const rows = (items as unknown[]).filter((x): x is Record<string, unknown> => typeof x === 'object' && x !== null);
  if (rows.length === 0) return h('section', { class: 'list' }, h('h2', {}, heading), h('p', {}, 'None.'));
  const cols = [...new Set(rows.slice(0, 50).flatMap((r) => Object.keys(r)))].filter((k) => k !== 'progress');
  return h('section', { class: 'list' },
    h('h2', {}, heading),
    table(title, heading, cols, rows.map((r) => h('tr', {}, cols.map((k) => cell(k,
      k === 'state' ? stateBadge(r.state, r.progress) : simple(r[k])))))));
}

function simple(v: unknown): string {
  if (v === undefined || v === null) return '—';
  if (typeof v === 'object') return stateText(v);
  return String(v);
}

export function loginPage(message: string | null, onToken: (token: string) => void): Node[] {
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const form = h('form', { class: 'login' },
    h('h1', {}, 'Log in'),
    h('p', {}, 'Open the link the server printed when it started, or run ', h('code', {}, 'snapnbd console url'),
      ' on the server, or paste the token from ', h('code', {}, 'DATA_DIR/console.token'), '.'),
    message === null ? null : h('p', { class: 'error', role: 'alert' }, message),
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'Console token'), input),
    h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary', 'data-key': 'login' }, 'Log in')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (input.value.trim() !== '') onToken(input.value.trim());
  });
  return [form];
}
