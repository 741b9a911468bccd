// `snapnbd serve`: parse options, open the store, start NBD listeners (and the control socket),
// print the ready lines, stop gracefully on SIGINT/SIGTERM.
import { mkdirSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startControlServer, type ControlServer } from '../control/server.ts';
import { NbdServer, formatListenAddress, parseListenAddress, type ListenAddress } from '../server/listener.ts';
import { openStore } from '../storage/index.ts';
import { NAME_PATTERN, type Store } from '../storage/types.ts';
import { VolumeRegistry } from '../volumes/registry.ts';
import { BackupManager } from '../backup/manager.ts';
import { parseTargetArg, type TargetSpec } from '../backup/target.ts';
import { isLogLevelName, log, setLogLevel } from '../util/log.ts';
import { parseSize } from '../util/size.ts';
import { SERVE_USAGE, VERSION } from './usage.ts';

export class UsageError extends Error {}

export interface ServeConfig {
  dataDir: string;
  listen: ListenAddress[];
  volumes: { name: string; size: number }[];
  images: { name: string; path: string }[];
  defaultExport: string;
  controlPath: string;
  readOnly: boolean;
  maxConnections: number;
  /** `--backup-target NAME=URL`, by name. */
  backupTargets: Map<string, TargetSpec>;
}

export const DEFAULT_PORT = 10809;
export const DEFAULT_VOLUME_SIZE = 2 ** 30;
export const DEFAULT_VOLUME_NAME = 'default';

export function parseServeArgs(argv: string[]): ServeConfig | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        'data-dir': { type: 'string' },
        listen: { type: 'string', multiple: true },
        volume: { type: 'string', multiple: true },
        'default-export': { type: 'string' },
        control: { type: 'string' },
        'read-only': { type: 'boolean' },
        'max-connections': { type: 'string' },
        'backup-target': { type: 'string', multiple: true },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    // parseArgs explains at length; one line is the contract.
    throw new UsageError((e as Error).message.split(/\.\s|\n/)[0]!);
  }
  const v = parsed.values;
  if (v.help) return 'help';
  const dataDir = resolve(v['data-dir'] ?? 'data');
  const listen = (v.listen ?? [`127.0.0.1:${DEFAULT_PORT}`]).map((s) => {
    const a = parseListenAddress(s);
    if (!a) throw new UsageError(`--listen: '${s}' is not HOST:PORT, [IPv6]:PORT or unix:/path`);
    return a;
  });
  const volumes = (v.volume ?? []).map((s) => {
    const m = /^([^=]+)=(.+)$/.exec(s);
    const size = m ? parseSize(m[2]!) : null;
    if (!m || size === null || size <= 0) throw new UsageError(`--volume: '${s}' is not NAME=SIZE (e.g. vm1=20G)`);
    if (!NAME_PATTERN.test(m[1]!)) throw new UsageError(`--volume: '${m[1]}' is not a valid volume name`);
    return { name: m[1]!, size };
  });
  const images = parsed.positionals.map((p) => {
    const path = resolve(p);
    const name = basename(path, extname(path));
    if (!NAME_PATTERN.test(name)) throw new UsageError(`image '${p}': '${name}' is not a valid volume name`);
    return { name, path };
  });
  const maxConnections = v['max-connections'] === undefined ? 0 : Number(v['max-connections']);
  if (!Number.isSafeInteger(maxConnections) || maxConnections < 0) {
    throw new UsageError(`--max-connections: '${v['max-connections']}' is not a whole number`);
  }
  const level = v['log-level'] ?? 'info';
  if (!isLogLevelName(level)) throw new UsageError(`--log-level: '${level}' is not error, warn, info or debug`);
  setLogLevel(level);
  const defaultExport = v['default-export'] ?? DEFAULT_VOLUME_NAME;
  const backupTargets = new Map<string, TargetSpec>();
  for (const arg of v['backup-target'] ?? []) {
    let t;
    try {
      t = parseTargetArg(arg);
    } catch (e) {
      throw new UsageError(`--backup-target: ${(e as Error).message}`);
    }
    if (backupTargets.has(t.name)) throw new UsageError(`--backup-target: '${t.name}' is given twice`);
    backupTargets.set(t.name, t.spec);
  }
  return {
    backupTargets,
    dataDir, listen, volumes, images, defaultExport,
    controlPath: resolve(v.control ?? join(dataDir, 'control.sock')),
    readOnly: v['read-only'] ?? false,
    maxConnections,
  };
}

export async function runServe(argv: string[]): Promise<number> {
  let config: ServeConfig | 'help';
  try {
    config = parseServeArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`snapnbd serve: ${e.message} (see snapnbd serve --help)\n`);
      return 2;
    }
    throw e;
  }
  if (config === 'help') {
    process.stdout.write(SERVE_USAGE);
    return 0;
  }
  return serve(config);
}

async function serve(config: ServeConfig): Promise<number> {
  mkdirSync(config.dataDir, { recursive: true });
  const startedAt = new Date();
  let store: Store;
  try {
    store = await openStore(config.dataDir);
  } catch (e) {
    // A corrupt, foreign or newer store: say which file and why, touch nothing.
    process.stderr.write(`snapnbd serve: cannot open the store in ${config.dataDir}: ${(e as Error).message}\n`);
    return 1;
  }
  try {
    await ensureVolumes(store, config);
  } catch (e) {
    process.stderr.write(`snapnbd serve: ${(e as Error).message}\n`);
    await store.close();
    return 1;
  }
  const registry = new VolumeRegistry(store, { defaultExport: config.defaultExport, readOnly: config.readOnly });
  const backups = new BackupManager({ store, registry, targets: config.backupTargets });
  const server = new NbdServer({ exports: registry, maxConnections: config.maxConnections });
  const listeners: string[] = [];
  let control: ControlServer;
  try {
    for (const addr of config.listen) {
      const bound = await server.listen(addr);
      listeners.push(`nbd ${formatListenAddress(bound)}`);
      process.stdout.write(`listening nbd ${formatListenAddress(bound)}\n`);
    }
    control = await startControlServer(config.controlPath, {
      registry,
      backups,
      serverInfo: () => ({ version: VERSION, listeners, startedAt }),
    });
    listeners.push(`control ${control.path}`);
    process.stdout.write(`listening control ${control.path}\n`);
  } catch (e) {
    log.error('cannot start', e);
    server.destroyAll();
    await store.close();
    return 1;
  }
  backups.warm();
  process.stdout.write('ready\n');
  log.info(`serving ${registry.list().map((e) => e.name).join(', ')} from ${config.dataDir}`);

  return new Promise<number>((resolveExit) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        log.warn(`second ${sig}: exiting at once`);
        process.exit(1);
      }
      log.info(`${sig}: stopping (in-flight requests finish, data is flushed)`);
      void (async () => {
        await control.close(); // no admin operation starts while we stop
        await server.stop();
        await backups.close(); // running jobs are cancelled; their markers removed
        await registry.revokeAll('server stopping');
        await store.close();
        resolveExit(0);
      })().catch((e: unknown) => {
        log.error('error while stopping', e);
        resolveExit(1);
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

/** --volume NAME=SIZE and IMAGE volumes that do not exist yet; `default` in an empty store. */
async function ensureVolumes(store: Store, config: ServeConfig): Promise<void> {
  const have = new Set(store.listVolumes().map((v) => v.name));
  for (const v of config.volumes) if (!have.has(v.name)) await store.createVolume({ name: v.name, size: v.size });
  for (const img of config.images) if (!have.has(img.name)) await store.createVolume({ name: img.name, backing: img.path });
  if (store.listVolumes().length === 0) await store.createVolume({ name: DEFAULT_VOLUME_NAME, size: DEFAULT_VOLUME_SIZE });
}
