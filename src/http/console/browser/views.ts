// The pages, built from the latest state: the volume list, one volume (its snapshots, connected
// clients, schedules, space over time and the picture of what changed), and the login form. The
// Backups page is backups-view.ts. Every control is a button or a link, so the keyboard reaches
// all of them.
import { type DiffResult, diffStrip } from './diff.ts';
import { formatSize, formatTime, h, plural, stateBadge, type Child } from './dom.ts';
import { historySection } from './history-view.ts';
import { nbdUri, snapshotState, volumeState, type ClientView, type ConsoleState, type HistoryView, type ServerInfo, type Snapshot, type Volume } from './model.ts';
import { schedulesSection, type ScheduleActions } from './schedules-view.ts';
import { button, cell, table, volumeLink } from './widgets.ts';

export interface DiffView {
  volume: string;
  from: string;
  to: string | null;
  result: DiffResult | null;
  error: string | null;
}

export interface HistoryState {
  volume: string;
  data: HistoryView | null;
  error: string | null;
}

export interface ViewActions extends ScheduleActions {
  backUp(s: Snapshot): void;
  takeSnapshot(volume: string): void;
  deleteVolume(v: Volume, snaps: Snapshot[]): void;
  rollback(v: Volume, s: Snapshot): void;
  clone(s: Snapshot): void;
  deleteSnapshot(s: Snapshot): void;
  copyUri(uri: string): void;
  showDiff(volume: string, from: string, to: string | null): void;
}

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
      cell('State', stateBadge(volumeState(v, snaps))),
      cell('Actions', h('div', { class: 'actions' },
        button('Take snapshot', `snap:${v.name}`, () => act.takeSnapshot(v.name), 'primary', `Take a snapshot of ${v.name}`),
        button('Delete', `delvol:${v.name}`, () => act.deleteVolume(v, snaps), 'danger', `Delete volume ${v.name}`))));
  });
  return [
    h('h1', {}, 'Volumes'),
    rows.length === 0
      ? h('p', {}, 'No volumes. Create one with snapnbd volume create NAME --size SIZE.')
      : table('volumes', 'Volumes', ['Name', 'Size', 'Used', 'Referenced', 'Written', 'Snapshots', 'Clients', 'Origin', 'State', 'Actions'], rows),
  ];
}

function originText(v: Volume): Child {
  if (v.origin !== null) return h('span', {}, 'clone of ', volumeLink(v.origin.volume), `@${v.origin.snapshot}`);
  if (v.backing !== null) return h('span', { class: 'path' }, v.backing);
  return '—';
}

export function volumePage(state: ConsoleState, name: string, server: ServerInfo | null, diff: DiffView | null, hist: HistoryState | null, act: ViewActions): Node[] {
  const back = h('p', { class: 'crumbs' }, h('a', { href: '#/' }, '← Volumes'));
  const v = state.volumes.find((x) => x.name === name);
  if (v === undefined) return [back, h('h1', {}, name), h('p', {}, `There is no volume ${name} (any more).`)];
  const snaps = state.snapshots[name] ?? [];
  const headUri = nbdUri(server, v.name, location.hostname);
  const facts: [string, Child][] = [
    ['State', stateBadge(volumeState(v, snaps))],
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
      cell('State', stateBadge(snapshotState(s))),
      cell('Used', formatSize(s.used)),
      cell('Written', formatSize(s.written)),
      cell('Exported', s.connections > 0 ? `yes (${plural(s.connections, 'client')})` : 'no'),
      cell('Clones', s.clones.length > 0 ? h('span', {}, ...s.clones.flatMap((c, j) => [j > 0 ? ', ' : '', volumeLink(c)])) : '—'),
      cell('Actions', h('div', { class: 'actions' },
        button('Roll back', `rollback:${id}`, () => act.rollback(v, s), 'danger', `Roll back ${v.name} to ${s.name}`),
        button('Clone', `clone:${id}`, () => act.clone(s), 'secondary', `Clone ${id}`),
        button('Back up', `backup:${id}`, () => act.backUp(s), 'secondary', `Back up ${id}`),
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
    h('h2', {}, 'Connected clients'),
    clientsTable(v.name, state.clients[v.name] ?? []),
    ...schedulesSection(v.name, state.schedules, act),
    h('h2', { id: 'history' }, 'Space over time'),
    historySection(hist !== null && hist.volume === v.name ? hist.data : null, hist !== null && hist.volume === v.name ? hist.error : null),
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

/** Who is connected to the volume or its snapshots: address, TLS identity, export. */
function clientsTable(volume: string, clients: ClientView[]): Node {
  if (clients.length === 0) return h('p', {}, 'No NBD clients connected.');
  const rows = clients.map((c) => h('tr', { 'data-client': c.peer },
    cell('Address', h('span', { class: 'path' }, c.peer)),
    cell('Identity', c.identity.length > 0 ? c.identity.join(', ') : c.tls !== null ? 'no client certificate' : '—'),
    cell('TLS', c.tls ?? 'no'),
    cell('Export', c.export ?? '—')));
  return table('clients', `Clients of ${volume}`, ['Address', 'Identity', 'TLS', 'Export'], rows);
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
