// The `volume`, `snapshot`, `clone` and `stats` commands: a thin client of the control socket.
// Each command is one method call (diff: several pages); human tables by default, the method's
// result as JSON with --json. Exit codes: 0 ok, 1 the server refused (message on stderr),
// 2 usage error (one line), 3 the server cannot be reached (naming the socket path).
import { resolve } from 'node:path';
import type { ControlClient } from '../control/client.ts';
import { formatSize, parseSize } from '../util/size.ts';
import type { DiffResult, SnapshotView, VolumeView } from '../volumes/views.ts';
import type { Schedule } from '../schedule/schedule-file.ts';
import { scheduleTable } from './schedule-commands.ts';
import { parseExportName } from '../volumes/export-name.ts';
import { commandPrologue, snapshotArg, usageFailure } from './command-line.ts';
import { CONTROL_CLI_OPTIONS, controlSocketPath, withControlClient } from './control-session.ts';
import { resultPrinter, table } from './output.ts';
import { UsageError } from './usage.ts';
import { formatState, formatVolumeState } from '../volumes/state.ts';

export const CONTROL_USAGE = `Usage:
  snapnbd volume create NAME --size SIZE [--backing FILE] [--chunk-size SIZE]
  snapnbd volume list [--limit N] [--after NAME]
  snapnbd volume info NAME                                    (with its schedules)
  snapnbd volume delete NAME [--force] [--with-snapshots]
  snapnbd volume accept-backing NAME                           (dangerous: see below)
  snapnbd snapshot create VOLUME[@NAME] [--description TEXT]   (no @NAME: a generated name)
  snapnbd snapshot list VOLUME [--limit N] [--after NAME]
  snapnbd snapshot info VOLUME@NAME
  snapnbd snapshot delete VOLUME@NAME
  snapnbd snapshot rollback VOLUME@NAME [--force]
  snapnbd snapshot diff VOLUME@FROM [VOLUME@TO]                (no TO: against the head)
  snapnbd snapshot export VOLUME@NAME [--since BASE] [-o FILE]   (a stream; see --help there)
  snapnbd volume import NAME [-i FILE]
  snapnbd clone VOLUME@NAME NEWVOLUME
  snapnbd stats

Common options:
  --control PATH    the server's control socket
  --data-dir DIR    use DIR/control.sock
                    (default: $SNAPNBD_CONTROL, else ./data/control.sock)
  --json            print the method's result as JSON
  -h, --help        this text

Lists: every entry (fetched page by page); --limit N: one page of N entries after --after NAME,
and the NAME to continue from.

SIZE takes binary suffixes: 512, 64K, 20G, 1T. Exit status: 0 ok, 1 the server refused
(reason on stderr), 2 usage error, 3 the server cannot be reached.

States (volume list/info, snapshot list/info): ready; unavailable: REASON (its backing file
changed or is missing: the volume is kept but not served); creating, deleting (snapshots).
volume delete of a volume with snapshots needs --with-snapshots (they are deleted with it; clones
made from them survive). volume accept-backing records a volume's changed backing file as it is
now and serves the volume again: only when you are sure the change is harmless, because the
volume's data was written over the old image (put the original back instead when you can).
`;

const OPTIONS = {
  ...CONTROL_CLI_OPTIONS,
  size: { type: 'string' },
  backing: { type: 'string' },
  'chunk-size': { type: 'string' },
  force: { type: 'boolean' },
  'with-snapshots': { type: 'boolean' },
  shrink: { type: 'boolean' },
  description: { type: 'string' },
  limit: { type: 'string' },
  after: { type: 'string' },
} as const;
type OptionName = keyof typeof OPTIONS;
const COMMON: readonly OptionName[] = ['control', 'data-dir', 'json', 'help'];

type Values = { [K in OptionName]?: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

interface Command {
  /** Positionals after the noun and verb. */
  args: { min: number; max: number; names: string };
  options: readonly OptionName[];
  run(args: string[], v: Values, c: ControlClient, out: Output): Promise<void>;
}

interface Output {
  /** The method's result: as JSON with --json, else `human()`. */
  result(value: unknown, human: () => string): void;
}

function sizeOption(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = parseSize(v);
  if (n === null || n <= 0) throw new UsageError(`--${flag}: '${v}' is not a size (e.g. 20G, 64K)`);
  return n;
}

/**
 * A paged list: with --limit, one page; without, every page (the server's default page size)
 * joined into one result with `next: null`.
 */
async function listPages<K extends string, T>(
  c: ControlClient, method: string, params: Record<string, unknown>, key: K, v: Values,
): Promise<Record<K, T[]> & { next: string | null }> {
  let limit: number | undefined;
  if (v.limit !== undefined) {
    limit = Number(v.limit);
    if (!/^\d+$/.test(v.limit) || !Number.isSafeInteger(limit) || limit < 1) throw new UsageError(`--limit: '${v.limit}' is not a positive whole number`);
  }
  const all: T[] = [];
  let after = v.after;
  for (;;) {
    const page = await c.call<Record<K, T[]> & { next: string | null }>(method, {
      ...params, ...(after !== undefined ? { after } : {}), ...(limit !== undefined ? { limit } : {}),
    });
    all.push(...page[key]);
    if (limit !== undefined || page.next === null) return { ...page, [key]: all } as Record<K, T[]> & { next: string | null };
    after = page.next;
  }
}

const moreHint = (next: string | null): string => (next === null ? '' : `(more: --after ${next})\n`);

function keyValues(pairs: [string, string][]): string {
  const w = Math.max(...pairs.map(([k]) => k.length));
  return pairs.map(([k, v]) => `${`${k}:`.padEnd(w + 1)} ${v}`).join('\n') + '\n';
}

function volumeDetails(v: VolumeView): string {
  return keyValues([
    ['name', v.name],
    ['state', formatVolumeState(v)],
    ['size', `${formatSize(v.size)} (${v.size} bytes)`],
    ['chunk size', formatSize(v.chunkSize)],
    ['backing', v.backing ?? '-'],
    ['origin', v.origin ? `${v.origin.volume}@${v.origin.snapshot}` : '-'],
    ['created', v.created],
    ['snapshots', String(v.snapshots)],
    ['referenced', formatSize(v.referenced)],
    ['used', formatSize(v.used)],
    ['written', formatSize(v.written)],
    ['connections', String(v.connections)],
    ['read-only', v.readOnly ? 'yes' : 'no'],
  ]);
}

function snapshotDetails(s: SnapshotView): string {
  return keyValues([
    ['snapshot', `${s.volume}@${s.name}`],
    ['created', s.created],
    ['state', formatState(s.state, s.reason)],
    ['description', s.description === '' ? '-' : s.description],
    ['size', formatSize(s.size)],
    ['referenced', formatSize(s.referenced)],
    ['used', formatSize(s.used)],
    ['written', formatSize(s.written)],
    ['exports', s.exports.length ? `${s.exports.join(', ')} (${s.connections} connection${s.connections === 1 ? '' : 's'})` : '-'],
    ['clones', s.clones.length ? s.clones.join(', ') : '-'],
    ['guid', s.guid || '-'],
  ]);
}

const COMMANDS: Record<string, Command> = {
  'volume create': {
    args: { min: 1, max: 1, names: 'NAME' },
    options: ['size', 'backing', 'chunk-size'],
    async run([name], v, c, out) {
      const size = sizeOption(v.size, 'size');
      const chunkSize = sizeOption(v['chunk-size'], 'chunk-size');
      if (size === undefined && v.backing === undefined) throw new UsageError('volume create: --size is required (or --backing FILE)');
      const r = await c.request('volume.create', {
        name: name!,
        ...(size !== undefined ? { size } : {}),
        ...(v.backing !== undefined ? { backing: resolve(v.backing) } : {}),
        ...(chunkSize !== undefined ? { chunkSize } : {}),
      });
      out.result(r, () => `created volume ${r.name}: ${formatSize(r.size)}, chunk size ${formatSize(r.chunkSize)}${r.backing ? `, backing ${r.backing}` : ''}\n`);
    },
  },
  'volume list': {
    args: { min: 0, max: 0, names: '' },
    options: ['limit', 'after'],
    async run(_a, v, c, out) {
      const r = await listPages<'volumes', VolumeView>(c, 'volume.list', {}, 'volumes', v);
      out.result(r, () => table(
        ['NAME', 'SIZE', 'USED', 'REFER', 'SNAPSHOTS', 'CONNS', 'ORIGIN', 'BACKING', 'STATE'],
        r.volumes.map((x) => [x.name, formatSize(x.size), formatSize(x.used), formatSize(x.referenced), String(x.snapshots),
          String(x.connections), x.origin ? `${x.origin.volume}@${x.origin.snapshot}` : '-', x.backing ?? '-', formatVolumeState(x)]),
      ) + moreHint(r.next));
    },
  },
  'volume info': {
    args: { min: 1, max: 1, names: 'NAME' },
    options: [],
    async run([name], _v, c, out) {
      const r = await c.request('volume.info', { name: name! });
      // Its schedules too (a server without the scheduler answers METHOD_NOT_FOUND: none shown).
      const schedules = await c.call<{ schedules: Schedule[] }>('schedule.list', { volume: name! })
        .then((x) => x.schedules, () => null);
      // --json stays volume.info's answer as is (`schedule list VOLUME --json` has the schedules).
      out.result(r, () => volumeDetails(r)
        + (schedules === null ? '' : schedules.length === 0 ? 'schedules: -\n' : `schedules:\n${scheduleTable(schedules)}`));
    },
  },
  'volume delete': {
    args: { min: 1, max: 1, names: 'NAME' },
    options: ['force', 'with-snapshots'],
    async run([name], v, c, out) {
      const r = await c.request('volume.delete', {
        name: name!, ...(v.force ? { force: true } : {}), ...(v['with-snapshots'] ? { withSnapshots: true } : {}),
      });
      out.result(r, () => `deleted volume ${r.name}`
        + (r.snapshots.length ? ` and its ${plural(r.snapshots.length, 'snapshot')} (${r.snapshots.join(', ')})` : ' (it had no snapshots)')
        + (r.clones.length ? `; clones kept: ${r.clones.join(', ')}` : '')
        + (r.disconnected ? `; disconnected ${plural(r.disconnected, 'NBD client')}` : '') + '\n');
    },
  },
  'volume accept-backing': {
    args: { min: 1, max: 1, names: 'NAME' },
    options: [],
    async run([name], _v, c, out) {
      const r = await c.request('volume.acceptBacking', { name: name! });
      out.result(r, () => r.accepted === null
        ? `volume ${r.name}: its backing file ${r.backing} was unchanged; nothing to accept\n`
        : `volume ${r.name}: accepted its backing file ${r.backing} as it is now (it was refused because: ${r.accepted}); state ${formatState(r.state, r.reason)}\n`);
    },
  },
  'volume resize': {
    args: { min: 2, max: 2, names: 'NAME SIZE' },
    options: ['shrink'],
    async run([name, sizeArg], v, c, out) {
      const size = parseSize(sizeArg!);
      if (size === null || size <= 0) throw new UsageError(`volume resize: '${sizeArg}' is not a size (e.g. 40G, 512M)`);
      const r = await c.request('volume.resize', { name: name!, size, ...(v.shrink ? { shrink: true } : {}) });
      out.result(r, () => r.size === r.previousSize
        ? `volume ${r.name} is already ${formatSize(r.size)}\n`
        : `resized volume ${r.name} from ${formatSize(r.previousSize)} to ${formatSize(r.size)}`
          + (r.size > r.previousSize && r.connections > 0
            ? `; its ${plural(r.connections, 'connected client')} keep${r.connections === 1 ? 's' : ''} the old size until ${r.connections === 1 ? 'it reconnects' : 'they reconnect'}` : '')
          + '\n');
    },
  },
  'snapshot create': {
    args: { min: 1, max: 1, names: 'VOLUME[@NAME]' },
    options: ['description'],
    async run([spec], v, c, out) {
      // No @NAME: the server generates the snapshot's name.
      const { volume, snapshot } = parseExportName(spec!).snapshot === null
        ? { volume: spec!, snapshot: undefined } : snapshotArg(spec!, 'snapshot create');
      const r = await c.request('snapshot.create', {
        volume,
        ...(snapshot !== undefined ? { name: snapshot } : {}),
        ...(v.description !== undefined ? { description: v.description } : {}),
      });
      out.result(r, () => `created snapshot ${r.volume}@${r.name} at ${r.created}\n`);
    },
  },
  'snapshot list': {
    args: { min: 1, max: 1, names: 'VOLUME' },
    options: ['limit', 'after'],
    async run([volume], v, c, out) {
      const r = await listPages<'snapshots', SnapshotView>(c, 'snapshot.list', { volume }, 'snapshots', v);
      out.result(r, () => table(
        ['NAME', 'CREATED', 'STATE', 'USED', 'REFER', 'WRITTEN', 'EXPORTS', 'CLONES', 'BACKUP', 'DESCRIPTION'],
        r.snapshots.map((s) => [s.name, s.created, formatState(s.state, s.reason), formatSize(s.used), formatSize(s.referenced), formatSize(s.written),
          s.connections ? String(s.connections) : '-', s.clones.length ? s.clones.join(',') : '-', s.backup ?? '-', s.description || '-']),
      ) + moreHint(r.next));
    },
  },
  'snapshot info': {
    args: { min: 1, max: 1, names: 'VOLUME@NAME' },
    options: [],
    async run([spec], _v, c, out) {
      const { volume, snapshot } = snapshotArg(spec!, 'snapshot info');
      const r = await c.request('snapshot.info', { volume, name: snapshot });
      out.result(r, () => snapshotDetails(r));
    },
  },
  'snapshot delete': {
    args: { min: 1, max: 1, names: 'VOLUME@NAME' },
    options: [],
    async run([spec], _v, c, out) {
      const { volume, snapshot } = snapshotArg(spec!, 'snapshot delete');
      const before = await c.request('snapshot.info', { volume, name: snapshot });
      const r = await c.request('snapshot.delete', { volume, name: snapshot });
      out.result(r, () => `deleted snapshot ${volume}@${snapshot} (taken ${before.created}; ${formatSize(before.used)} only it held is freed)`
        + (before.clones.length ? `; clones kept: ${before.clones.join(', ')}` : '') + '\n');
    },
  },
  'snapshot rollback': {
    args: { min: 1, max: 1, names: 'VOLUME@NAME' },
    options: ['force'],
    async run([spec], v, c, out) {
      const { volume, snapshot } = snapshotArg(spec!, 'snapshot rollback');
      // What the rollback destroys: the head's changes since the snapshot (chunk-granular).
      let discarded = 0;
      let cursor: string | null = null;
      do {
        const page: DiffResult = await c.request('snapshot.diff', { volume, from: snapshot, ...(cursor !== null ? { cursor } : {}) });
        for (const e of page.extents) discarded += e.length;
        cursor = page.next;
      } while (cursor !== null);
      const r = await c.request('snapshot.rollback', { volume, name: snapshot, ...(v.force ? { force: true } : {}) });
      out.result(r, () => `rolled back ${volume} to ${volume}@${snapshot}: `
        + (discarded ? `discarded the head's changes since that snapshot (${formatSize(discarded)})` : 'the head had not changed since that snapshot')
        + (r.disconnected ? `; disconnected ${plural(r.disconnected, 'NBD client')}` : '') + '\n');
    },
  },
  'snapshot diff': {
    args: { min: 1, max: 2, names: 'VOLUME@FROM [VOLUME@TO]' },
    options: [],
    async run([fromSpec, toSpec], _v, c, out) {
      const from = snapshotArg(fromSpec!, 'snapshot diff');
      const to = toSpec === undefined ? undefined : snapshotArg(toSpec, 'snapshot diff');
      if (to && to.volume !== from.volume) throw new UsageError(`snapshot diff: both snapshots must be of one volume ('${from.volume}' and '${to.volume}')`);
      const all: DiffResult = { volume: from.volume, from: from.snapshot, to: to?.snapshot ?? null, extents: [], next: null };
      let cursor: string | null = null;
      do {
        const page: DiffResult = await c.request('snapshot.diff', {
          volume: from.volume, from: from.snapshot, ...(to ? { to: to.snapshot } : {}), ...(cursor !== null ? { cursor } : {}),
        });
        all.extents.push(...page.extents);
        cursor = page.next;
      } while (cursor !== null);
      out.result(all, () => {
        const total = all.extents.reduce((n, e) => n + e.length, 0);
        return table(['OFFSET', 'LENGTH'], all.extents.map((e) => [String(e.offset), String(e.length)]))
          + `${all.extents.length} extent${all.extents.length === 1 ? '' : 's'}, ${formatSize(total)} changed between ${fromSpec} and ${toSpec ?? `${from.volume} (head)`}\n`;
      });
    },
  },
  'clone': {
    args: { min: 2, max: 2, names: 'VOLUME@NAME NEWVOLUME' },
    options: [],
    async run([spec, name], _v, c, out) {
      const { volume, snapshot } = snapshotArg(spec!, 'clone');
      const r = await c.request('volume.clone', { volume, snapshot, name: name! });
      out.result(r, () => `cloned ${volume}@${snapshot} to volume ${r.name} (${formatSize(r.size)})\n`);
    },
  },
  'stats': {
    args: { min: 0, max: 0, names: '' },
    options: [],
    async run(_a, _v, c, out) {
      const r = await c.request('server.stats');
      out.result(r, () =>
        table(['EXPORT', 'CONNS', 'REQUESTS', 'READ', 'WRITTEN', 'ERRORS'],
          r.exports.map((e) => [e.name, String(e.connections), String(e.requests), formatSize(e.bytesRead), formatSize(e.bytesWritten), String(e.errors)]))
        + '\n'
        + table(['VOLUME', 'SIZE', 'USED', 'REFER', 'WRITTEN', 'SNAPSHOTS'],
          r.volumes.map((v) => [v.name, formatSize(v.size), formatSize(v.used), formatSize(v.referenced), formatSize(v.written), String(v.snapshots)]))
        + `\nstore: ${formatSize(r.store.allocatedBytes)} on disk, ${formatSize(r.store.liveBytes)} live, ${r.store.volumes} volumes, ${r.store.snapshots} snapshots`
        + (r.store.full ? `, FULL (${formatSize(r.store.freeBytes)} free, kept for metadata): writes that need new space fail with ENOSPC\n` : '\n')
        + (r.connections.length === 0 ? '' : '\n' + table(['PEER', 'TLS', 'IDENTITY', 'EXPORT'],
          r.connections.map((x) => [x.peer, x.tls ?? '-', x.identity.length ? x.identity.join(',') : '-', x.export ?? '-']))));
    },
  },
};

const NOUNS_WITH_VERBS = new Set(['volume', 'snapshot']);

export async function runControlCli(argv: string[]): Promise<number> {
  const parsed = commandPrologue(argv, { options: OPTIONS, allowPositionals: true }, CONTROL_USAGE, usage);
  if (typeof parsed === 'number') return parsed;
  const values = parsed.values as Values;
  const pos = parsed.positionals;
  const noun = pos[0];
  if (noun === undefined) return usage('missing command');
  let key: string;
  let args: string[];
  if (NOUNS_WITH_VERBS.has(noun)) {
    if (pos[1] === undefined) return usage(`${noun}: missing subcommand`);
    key = `${noun} ${pos[1]}`;
    args = pos.slice(2);
  } else {
    key = noun;
    args = pos.slice(1);
  }
  const cmd = COMMANDS[key];
  if (!cmd) return usage(`unknown command '${key}'`);
  for (const opt of Object.keys(values) as OptionName[]) {
    if (!COMMON.includes(opt) && !cmd.options.includes(opt)) return usage(`${key}: option --${opt} does not apply`);
  }
  if (args.length < cmd.args.min || args.length > cmd.args.max) {
    return usage(`${key}: expected ${cmd.args.names || 'no arguments'}, got ${args.length === 0 ? 'none' : `'${args.join(' ')}'`}`);
  }
  const path = controlSocketPath({ control: values.control, dataDir: values['data-dir'] });
  const out: Output = { result: resultPrinter(values.json ?? false) };
  return withControlClient(path, (c) => cmd.run(args, values, c, out));
}

function plural(n: number, what: string): string {
  return `${n} ${what}${n === 1 ? '' : 's'}`;
}

function usage(message: string): number {
  return usageFailure(message);
}
