// `snapnbd serve`: parse options, open the store, start NBD listeners (and the control socket),
// print the ready lines, stop gracefully on SIGINT/SIGTERM.
import { mkdirSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import type { ControlContext } from '../control/methods.ts';
import { startControlServer, type ControlServer } from '../control/server.ts';
import { isLoopbackHost } from '../http/console/guard.ts';
import { startConsole, type ConsolePem, type ConsoleServer } from '../http/console/server.ts';
import { loadOrCreateToken, loginUrl } from '../http/console/token.ts';
import { AccessConfigError, AccessRules, exportPattern } from '../server/access.ts';
import { NbdServer, formatListenAddress, parseListenAddress, type ListenAddress } from '../server/listener.ts';
import { DEFAULT_MEMORY_BUDGET } from '../server/memory-budget.ts';
import { SESSION_DEFAULTS, type TlsSettings } from '../server/session.ts';
import { TlsConfigError, TlsMode, isTlsMode, loadTlsMaterial, type TlsFiles } from '../server/tls.ts';
import { openStore } from '../storage/index.ts';
import { isValidName, StoreError, StoreErrorCode, type Store } from '../storage/types.ts';
import { VolumeRegistry } from '../volumes/registry.ts';
import { HISTORY_INTERVAL_DEFAULT_S, HISTORY_INTERVAL_MAX_S, HISTORY_INTERVAL_MIN_S, SpaceHistory } from '../volumes/space-history.ts';
import { isLogFormat, isLogLevelName, log, setLogFormat, setLogLevel, type LogLevelName } from '../util/log.ts';
import { Reloader, logLevelHook } from './reload.ts';
import { notifySystemd } from './service-notify.ts';
import { formatSize, parseSize } from '../util/size.ts';
import { backingAdvice } from '../volumes/state.ts';
import { commandUsageFailure, HELP_OPTION, parseCommandLine } from './command-line.ts';
import { SERVE_USAGE, UsageError } from './usage.ts';
import { VERSION, buildInfo } from './version.ts';
import { MetricsCollector, StoreActivity } from '../http/metrics.ts';
import { startMetricsServer, type MetricsServer } from '../http/metrics-server.ts';
import { RequestMetrics } from '../server/request-metrics.ts';
import { OperationMetrics } from '../util/operation-metrics.ts';
import { BackupManager } from '../backup/manager.ts';
import { parseTargetArg, type TargetSpec } from '../backup/target.ts';
import { Scheduler } from '../schedule/scheduler.ts';

export interface ServeConfig {
  dataDir: string;
  listen: ListenAddress[];
  volumes: { name: string; size: number }[];
  images: { name: string; path: string }[];
  defaultExport: string;
  controlPath: string;
  readOnly: boolean;
  maxConnections: number;
  /** `--config FILE`: settings re-read on SIGHUP. */
  configPath: string | null;
  logLevel: LogLevelName;
  /** `--metrics HOST:PORT`: serve Prometheus metrics there. */
  metrics: { host: string; port: number } | null;
  /** The web console's address (--http), or null. */
  http: { host: string; port: number } | null;
  /** `--backup-target NAME=URL`, by name. */
  backupTargets: Map<string, TargetSpec>;
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
  /** `--history-interval S`: how often each volume's space is sampled for volume.history. */
  historyIntervalS: number;
}

export const DEFAULT_PORT = 10809;
export const DEFAULT_VOLUME_SIZE = 2 ** 30;
export const DEFAULT_VOLUME_NAME = 'default';

export function parseServeArgs(argv: string[]): ServeConfig | 'help' {
  const parsed = parseCommandLine(argv, {
    allowPositionals: true,
    options: {
      'data-dir': { type: 'string' },
      listen: { type: 'string', multiple: true },
      volume: { type: 'string', multiple: true },
      'default-export': { type: 'string' },
      control: { type: 'string' },
      'read-only': { type: 'boolean' },
      'max-connections': { type: 'string' },
      'backup-target': { type: 'string', multiple: true },
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
      metrics: { type: 'string' },
      'log-format': { type: 'string' },
      config: { type: 'string' },
      http: { type: 'string' },
      'http-insecure': { type: 'boolean' },
      'history-interval': { type: 'string' },
      help: HELP_OPTION,
    },
  });
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
    if (!isValidName(m[1])) throw new UsageError(`--volume: '${m[1]}' is not a valid volume name`);
    return { name: m[1]!, size };
  });
  const images = parsed.positionals.map((p) => {
    const path = resolve(p);
    const name = basename(path, extname(path));
    if (!isValidName(name)) throw new UsageError(`image '${p}': '${name}' is not a valid volume name`);
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
  const logFormat = v['log-format'] ?? 'text';
  if (!isLogFormat(logFormat)) throw new UsageError(`--log-format: '${logFormat}' is not text or json`);
  setLogFormat(logFormat);
  let metrics: ServeConfig['metrics'] = null;
  if (v.metrics !== undefined) {
    const a = parseListenAddress(v.metrics);
    if (!a || a.kind !== 'tcp') throw new UsageError(`--metrics: '${v.metrics}' is not HOST:PORT or [IPv6]:PORT`);
    metrics = { host: a.host, port: a.port };
  }
  const defaultExport = v['default-export'] ?? DEFAULT_VOLUME_NAME;
  const http = parseHttpOption(v.http, v['http-insecure'] ?? false, tlsFiles.cert !== undefined && tlsFiles.key !== undefined);
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
    metrics,
    configPath: v.config === undefined ? null : resolve(v.config),
    logLevel: level,
    http,
    listSnapshots: listSnapshots === 'yes',
    tls, tlsFiles, tlsExports,
    accessFile: abs(v.access) ?? null,
    maxConnectionsPerClient: count('max-connections-per-client', v['max-connections-per-client'], 0),
    memoryBudget,
    idleTimeoutMs: 1000 * count('idle-timeout', v['idle-timeout'], SESSION_DEFAULTS.idleTimeoutMs / 1000),
    stallTimeoutMs: 1000 * count('stall-timeout', v['stall-timeout'], SESSION_DEFAULTS.stallTimeoutMs / 1000),
    historyIntervalS: historyInterval(count('history-interval', v['history-interval'], HISTORY_INTERVAL_DEFAULT_S)),
  };
}

function historyInterval(s: number): number {
  if (s < HISTORY_INTERVAL_MIN_S || s > HISTORY_INTERVAL_MAX_S) {
    throw new UsageError(`--history-interval: ${s} is not between ${HISTORY_INTERVAL_MIN_S} and ${HISTORY_INTERVAL_MAX_S} seconds`);
  }
  return s;
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

/**
 * The console's certificate: the NBD server's (--tls-cert/--tls-key), also when `--tls off` keeps
 * NBD in clear; null without a certificate or without --http.
 */
function loadConsolePem(config: ServeConfig, tls: TlsSettings | null): ConsolePem | null {
  if (config.http === null || config.tlsFiles.cert === undefined) return null;
  return (tls?.material ?? loadTlsMaterial(config.tlsFiles)).serverPem;
}

/**
 * --http HOST:PORT: loopback only, unless the console has a certificate (--tls-cert and
 * --tls-key: it serves HTTPS) or --http-insecure says plain HTTP on the network is wanted.
 */
function parseHttpOption(value: string | undefined, insecure: boolean, https: boolean): ServeConfig['http'] {
  if (value === undefined) {
    if (insecure) throw new UsageError('--http-insecure needs --http ADDR');
    return null;
  }
  const a = parseListenAddress(value);
  if (!a || a.kind !== 'tcp') throw new UsageError(`--http: '${value}' is not HOST:PORT or [IPv6]:PORT`);
  if (!isLoopbackHost(a.host) && !insecure && !https) {
    throw new UsageError(`--http: ${value} is not a loopback address and the console has no TLS: give --tls-cert and --tls-key for HTTPS, or add --http-insecure to serve it in the clear anyway`);
  }
  return { host: a.host, port: a.port };
}

export async function runServe(argv: string[]): Promise<number> {
  let config: ServeConfig | 'help';
  try {
    config = parseServeArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) return commandUsageFailure('serve', e.message);
    throw e;
  }
  if (config === 'help') {
    process.stdout.write(SERVE_USAGE);
    return 0;
  }
  return serve(config);
}

async function serve(config: ServeConfig): Promise<number> {
  const reloader = new Reloader();
  if (config.configPath) {
    const hook = logLevelHook(config.configPath, config.logLevel);
    try {
      await hook.reload(); // the file's settings apply from the start
    } catch (e) {
      process.stderr.write(`snapnbd serve: ${(e as Error).message}\n`);
      return 1;
    }
    reloader.add(hook);
  }
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
  let consolePem: ConsolePem | null;
  try {
    consolePem = loadConsolePem(config, tls);
  } catch (e) {
    if (!(e instanceof TlsConfigError)) throw e;
    process.stderr.write(`snapnbd serve: ${e.message}\n`);
    return 2;
  }
  if (tls !== null || access !== null || consolePem !== null) {
    // Certificates, CRL, PSK file and access rules; connections stay. All or nothing.
    reloader.add({
      name: 'TLS material and access rules',
      async reload() {
        const nextTls = loadTlsSettings(config);
        const nextAccess = config.accessFile === null ? null : AccessRules.load(config.accessFile);
        const nextPem = loadConsolePem(config, nextTls);
        tls = nextTls;
        access = nextAccess;
        if (nextPem) web?.setCertificate(nextPem);
        return 'reloaded';
      },
    });
  }
  mkdirSync(config.dataDir, { recursive: true });
  const startedAt = new Date();
  const listeners: string[] = [];
  // Figures for --metrics, filled by the engine, the sessions and the registry as they work.
  const activity = config.metrics ? new StoreActivity() : null;
  const requests = config.metrics ? new RequestMetrics() : null;
  const operations = new OperationMetrics(); // metrics and `snapnbd health` read it
  let store: Store;
  try {
    // The store lock comes first: a second server on this store stops here, before any socket.
    store = await openStore(config.dataDir, {
      holder: () => ({ command: 'snapnbd serve', control: config.controlPath, listeners: listenerNames(listeners) }),
      ...(activity ? { observer: activity } : {}),
    });
  } catch (e) {
    if (e instanceof StoreError && e.code === StoreErrorCode.StoreLocked) {
      process.stderr.write(`snapnbd serve: ${e.message}\n`);
      return 1;
    }
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
    defaultExport: config.defaultExport, readOnly: config.readOnly, listSnapshots: config.listSnapshots, operations,
  });
  const server = new NbdServer({
    exports: registry, maxConnections: config.maxConnections, tls: () => tls, access: () => access,
    maxConnectionsPerClient: config.maxConnectionsPerClient, memoryBudget: config.memoryBudget,
    session: { idleTimeoutMs: config.idleTimeoutMs, stallTimeoutMs: config.stallTimeoutMs, metrics: requests },
  });
  const backups = new BackupManager({ store, registry, targets: config.backupTargets });
  const ctx: ControlContext = {
    registry, backups, serverInfo: () => ({ version: VERSION, listeners, startedAt, connections: server.connections() }), health: { dataDir: config.dataDir, operations },
  };
  // volume.history (the console's space chart).
  const history = new SpaceHistory({ dataDir: config.dataDir, intervalSeconds: config.historyIntervalS, figures: () => registry.listVolumes() });
  ctx.history = history;
  let control: ControlServer | null = null;
  let web: ConsoleServer | null = null;
  let metrics: { server: MetricsServer; collector: MetricsCollector } | null = null;
  // Snapshot schedules: the control methods manage them, health reports their failed runs.
  const schedules = new Scheduler({ dataDir: config.dataDir, registry, backups });
  ctx.schedules = schedules;
  if (ctx.health) ctx.health.schedules = schedules;
  try {
    for (const addr of config.listen) {
      const bound = await server.listen(addr);
      listeners.push(`nbd ${formatListenAddress(bound)}`);
      process.stdout.write(`listening nbd ${formatListenAddress(bound)}\n`);
    }
    control = await startControlServer(config.controlPath, ctx);
    listeners.push(`control ${control.path}`);
    process.stdout.write(`listening control ${control.path}\n`);
    if (config.metrics && activity && requests) {
      const { version, commit } = buildInfo();
      const collector = new MetricsCollector({
        registry, requests, operations, store: activity, dataDir: config.dataDir,
        connections: () => server.connectionCounts, build: { version, commit }, schedules,
      });
      metrics = { collector, server: await startMetricsServer(config.metrics.host, config.metrics.port, collector) };
      const where = formatListenAddress({ kind: 'tcp', host: config.metrics.host, port: metrics.server.port });
      listeners.push(`metrics http://${where}/metrics`);
      process.stdout.write(`listening metrics ${where}\n`);
    }
    if (config.http) {
      const { token } = loadOrCreateToken(config.dataDir);
      web = await startConsole({ host: config.http.host, port: config.http.port, token, ctx, tls: consolePem });
      const where = formatListenAddress({ kind: 'tcp', host: web.host, port: web.port });
      listeners.push(`${web.scheme} ${where}`);
      process.stdout.write(`listening ${web.scheme} ${where}\n`);
      // The login link, once per start; later: `snapnbd console url`. The token is in the
      // fragment, which browsers never send to a server.
      process.stdout.write(`console ${loginUrl(where, token, web.scheme)}\n`);
    }
  } catch (e) {
    log.error('cannot start', e);
    metrics?.collector.stop();
    await metrics?.server.close();
    await web?.close();
    await control?.close();
    server.destroyAll();
    await store.close();
    return 1;
  }
  const volumes = store.listVolumes();
  for (const v of volumes) {
    if (v.unavailable !== null) log.error(`volume '${v.name}' is unavailable (not served): ${v.unavailable}; ${backingAdvice(v.name)}`);
  }
  const served = volumes.filter((v) => v.unavailable === null).map((v) => v.name);
  // Runs missed while the server was down are due now: each is taken once.
  await schedules.start().catch(() => undefined); // a bad file is logged and shown by health
  reloader.add({ name: 'schedules', reload: () => schedules.reload() });
  backups.warm();
  history.start();

  const stopped = new Promise<number>((resolveExit) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) {
        log.warn(`second ${sig}: exiting at once`);
        process.exit(1);
      }
      log.info(`${sig}: stopping (in-flight requests finish, data is flushed)`);
      void (async () => {
        const scheduled = schedules.stop(); // no new run; those running end once their backup job is cancelled
        await notifySystemd(['STOPPING=1']);
        history.stop();
        await web?.close();
        await control?.close(); // no admin operation starts while we stop
        await metrics?.server.close();
        metrics?.collector.stop();
        await server.stop();
        await backups.close(); // running jobs are cancelled; their markers removed
        await scheduled;
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
    // Without a handler SIGHUP would kill the server (`systemctl reload` sends it).
    process.on('SIGHUP', () => {
      log.info('SIGHUP: reloading'); // at least the schedules file; also --config, TLS and access rules when given
      void reloader.reload();
    });
  });
  // Only now: whoever starts us may send SIGTERM as soon as it reads "ready" (the pipe write can
  // wake it before our next line runs), and the default action would kill us unflushed.
  process.stdout.write('ready\n');
  log.info(`serving ${served.length ? served.join(', ') : 'no volume'} from ${config.dataDir}`);
  const exportCount = registry.list().length; // also loads the export catalog before the first LIST
  void notifySystemd(['READY=1', `STATUS=serving ${exportCount} export(s) on ${listenerNames(listeners).map((l) => l.slice(4)).join(', ')}`]);
  return stopped;
}

/** The NBD listeners among `listeners` ("nbd ADDR"), for the store lock's holder answer. */
function listenerNames(listeners: string[]): string[] {
  return listeners.filter((l) => l.startsWith('nbd '));
}

/**
 * --volume NAME=SIZE and IMAGE volumes that do not exist yet; `default` in an empty store. An
 * existing volume of another size is left as it is, with a warning: data is never changed here.
 */
async function ensureVolumes(store: Store, config: ServeConfig): Promise<void> {
  const have = new Map(store.listVolumes().map((v) => [v.name, v]));
  for (const v of config.volumes) {
    const old = have.get(v.name);
    if (!old) await store.createVolume({ name: v.name, size: v.size });
    else if (old.size !== v.size) {
      log.warn(`volume '${v.name}' exists with ${formatSize(old.size)} (${old.size} bytes); --volume asks for ` +
        `${formatSize(v.size)} (${v.size} bytes): it is served as it is, nothing changed ` +
        `(to change its size: snapnbd volume resize ${v.name} SIZE)`);
    }
  }
  for (const img of config.images) if (!have.has(img.name)) await store.createVolume({ name: img.name, backing: img.path });
  if (store.listVolumes().length === 0) await store.createVolume({ name: DEFAULT_VOLUME_NAME, size: DEFAULT_VOLUME_SIZE });
}
