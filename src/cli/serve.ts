// `snapnbd serve`: parse options, open the store, start NBD listeners (and the control socket),
// print the ready lines, stop gracefully on SIGINT/SIGTERM.
import { mkdirSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startControlServer, type ControlServer } from '../control/server.ts';
import { AccessConfigError, AccessRules, exportPattern } from '../server/access.ts';
import { NbdServer, formatListenAddress, parseListenAddress, type ListenAddress } from '../server/listener.ts';
import { DEFAULT_MEMORY_BUDGET } from '../server/memory-budget.ts';
import { SESSION_DEFAULTS, type TlsSettings } from '../server/session.ts';
import { TlsConfigError, TlsMode, isTlsMode, loadTlsMaterial, type TlsFiles } from '../server/tls.ts';
import { openStore } from '../storage/index.ts';
import { NAME_PATTERN, type Store } from '../storage/types.ts';
import { VolumeRegistry } from '../volumes/registry.ts';
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
  /** NBD_OPT_LIST names snapshot exports too. */
  listSnapshots: boolean;
  tls: TlsMode;
  tlsFiles: TlsFiles;
  /** Export patterns that need TLS in mode `on` (selective TLS). */
  tlsExports: string[];
  accessFile: string | null;
  maxConnectionsPerClient: number;
  memoryBudget: number;
  idleTimeoutMs: number;
  stallTimeoutMs: number;
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
        'list-snapshots': { type: 'string' },
        tls: { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-ca': { type: 'string' },
        'tls-crl': { type: 'string' },
        'tls-psk': { type: 'string' },
        'tls-export': { type: 'string', multiple: true },
        access: { type: 'string' },
        'max-connections-per-client': { type: 'string' },
        'memory-budget': { type: 'string' },
        'idle-timeout': { type: 'string' },
        'stall-timeout': { type: 'string' },
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
  const listSnapshots = v['list-snapshots'] ?? 'yes';
  if (listSnapshots !== 'yes' && listSnapshots !== 'no') throw new UsageError(`--list-snapshots: '${listSnapshots}' is not yes or no`);
  const tlsFiles: TlsFiles = {
    cert: abs(v['tls-cert']), key: abs(v['tls-key']), ca: abs(v['tls-ca']), crl: abs(v['tls-crl']), psk: abs(v['tls-psk']),
  };
  const material = Object.values(tlsFiles).some((f) => f !== undefined);
  // Default: require whenever TLS material is given, off otherwise.
  const tls = v.tls ?? (material ? TlsMode.Require : TlsMode.Off);
  if (!isTlsMode(tls)) throw new UsageError(`--tls: '${tls}' is not off, on or require`);
  if (tls !== TlsMode.Off && !material) throw new UsageError(`--tls ${tls} needs --tls-cert and --tls-key, or --tls-psk`);
  const tlsExports = v['tls-export'] ?? [];
  if (tlsExports.length > 0 && tls !== TlsMode.On) throw new UsageError('--tls-export needs --tls on (with require, every export needs TLS)');
  const count = (flag: string, value: string | undefined, dflt: number): number => {
    if (value === undefined) return dflt;
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new UsageError(`--${flag}: '${value}' is not a whole number`);
    return n;
  };
  let memoryBudget = DEFAULT_MEMORY_BUDGET;
  if (v['memory-budget'] !== undefined) {
    const b = parseSize(v['memory-budget']);
    if (b === null) throw new UsageError(`--memory-budget: '${v['memory-budget']}' is not a size (e.g. 512M; 0: none)`);
    memoryBudget = b;
  }
  const level = v['log-level'] ?? 'info';
  if (!isLogLevelName(level)) throw new UsageError(`--log-level: '${level}' is not error, warn, info or debug`);
  setLogLevel(level);
  const defaultExport = v['default-export'] ?? DEFAULT_VOLUME_NAME;
  return {
    dataDir, listen, volumes, images, defaultExport,
    controlPath: resolve(v.control ?? join(dataDir, 'control.sock')),
    readOnly: v['read-only'] ?? false,
    maxConnections,
    listSnapshots: listSnapshots === 'yes',
    tls, tlsFiles, tlsExports,
    accessFile: abs(v.access) ?? null,
    maxConnectionsPerClient: count('max-connections-per-client', v['max-connections-per-client'], 0),
    memoryBudget,
    idleTimeoutMs: 1000 * count('idle-timeout', v['idle-timeout'], SESSION_DEFAULTS.idleTimeoutMs / 1000),
    stallTimeoutMs: 1000 * count('stall-timeout', v['stall-timeout'], SESSION_DEFAULTS.stallTimeoutMs / 1000),
  };
}

function abs(p: string | undefined): string | undefined {
  return p === undefined ? undefined : resolve(p);
}

/** TLS settings from the files now; TlsConfigError says what is wrong in one line. */
function loadTlsSettings(config: ServeConfig): TlsSettings | null {
  if (config.tls === TlsMode.Off) return null;
  const patterns = config.tlsExports.map(exportPattern);
  return {
    mode: config.tls,
    material: loadTlsMaterial(config.tlsFiles),
    exportNeedsTls: (name) => patterns.some((p) => p.test(name)),
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
  let tls: TlsSettings | null;
  let access: AccessRules | null;
  try {
    tls = loadTlsSettings(config);
    access = config.accessFile === null ? null : AccessRules.load(config.accessFile);
  } catch (e) {
    if (!(e instanceof TlsConfigError || e instanceof AccessConfigError)) throw e;
    process.stderr.write(`snapnbd serve: ${e.message}\n`);
    return 2;
  }
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
  const registry = new VolumeRegistry(store, {
    defaultExport: config.defaultExport, readOnly: config.readOnly, listSnapshots: config.listSnapshots,
  });
  const server = new NbdServer({
    exports: registry, maxConnections: config.maxConnections, tls: () => tls, access: () => access,
    maxConnectionsPerClient: config.maxConnectionsPerClient, memoryBudget: config.memoryBudget,
    session: { idleTimeoutMs: config.idleTimeoutMs, stallTimeoutMs: config.stallTimeoutMs },
  });
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
      serverInfo: () => ({ version: VERSION, listeners, startedAt, connections: server.connections() }),
    });
    listeners.push(`control ${control.path}`);
    process.stdout.write(`listening control ${control.path}\n`);
  } catch (e) {
    log.error('cannot start', e);
    server.destroyAll();
    await store.close();
    return 1;
  }
  process.stdout.write('ready\n');
  // Also loads the export catalog now rather than at the first client's LIST.
  const listed = registry.list().length;
  log.info(`serving ${listed} listed export${listed === 1 ? '' : 's'} from ${config.dataDir}`);

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
    // Reload certificates, CRL, PSK file and access rules; connections stay. All or nothing.
    process.on('SIGHUP', () => {
      try {
        const nextTls = loadTlsSettings(config);
        const nextAccess = config.accessFile === null ? null : AccessRules.load(config.accessFile);
        tls = nextTls;
        access = nextAccess;
        log.info('SIGHUP: reloaded TLS material and access rules');
      } catch (e) {
        log.error(`SIGHUP: keeping the previous configuration: ${(e as Error).message}`);
      }
    });
  });
}

/** --volume NAME=SIZE and IMAGE volumes that do not exist yet; `default` in an empty store. */
async function ensureVolumes(store: Store, config: ServeConfig): Promise<void> {
  const have = new Set(store.listVolumes().map((v) => v.name));
  for (const v of config.volumes) if (!have.has(v.name)) await store.createVolume({ name: v.name, size: v.size });
  for (const img of config.images) if (!have.has(img.name)) await store.createVolume({ name: img.name, backing: img.path });
  if (store.listVolumes().length === 0) await store.createVolume({ name: DEFAULT_VOLUME_NAME, size: DEFAULT_VOLUME_SIZE });
}
