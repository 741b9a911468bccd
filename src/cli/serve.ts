// `snapnbd serve`: parse options, open the store, start NBD listeners (and the control socket),
// print the ready lines, stop gracefully on SIGINT/SIGTERM.
import { mkdirSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { NbdServer, formatListenAddress, parseListenAddress, type ListenAddress } from '../server/listener.ts';
import { StaticExports } from '../server/static-exports.ts';
import { RawFileDevice } from '../storage/raw-file-device.ts';
import { NAME_PATTERN } from '../storage/types.ts';
import { isLogLevelName, log, setLogLevel } from '../util/log.ts';
import { parseSize } from '../util/size.ts';
import { SERVE_USAGE } from './usage.ts';

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
  return {
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
  const backend = await openRawBackend(config);
  const server = new NbdServer({ exports: backend.exports, maxConnections: config.maxConnections });
  try {
    for (const addr of config.listen) {
      const bound = await server.listen(addr);
      process.stdout.write(`listening nbd ${formatListenAddress(bound)}\n`);
    }
  } catch (e) {
    log.error('cannot listen', e);
    server.destroyAll();
    await backend.close();
    return 1;
  }
  process.stdout.write('ready\n');
  log.info(`serving ${backend.exports.list().map((e) => e.name).join(', ')} from ${config.dataDir}`);

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
        await server.stop();
        await backend.close();
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

/**
 * Interim backend until the copy-on-write engine is wired in: each volume is a sparse raw file
 * in the data dir; an IMAGE is served read-only (it is never written).
 */
async function openRawBackend(config: ServeConfig): Promise<{ exports: StaticExports; close(): Promise<void> }> {
  const exports = new StaticExports(config.defaultExport);
  const devices: RawFileDevice[] = [];
  const volumes = config.volumes.length === 0 && config.images.length === 0
    ? [{ name: DEFAULT_VOLUME_NAME, size: DEFAULT_VOLUME_SIZE }]
    : config.volumes;
  for (const v of volumes) {
    const d = await RawFileDevice.open(join(config.dataDir, `${v.name}.raw`), { readOnly: config.readOnly, size: v.size });
    devices.push(d);
    exports.add(v.name, d, `volume ${v.name}`);
  }
  for (const img of config.images) {
    const d = await RawFileDevice.open(img.path, { readOnly: true });
    devices.push(d);
    exports.add(img.name, d, `image ${img.path}`);
  }
  return {
    exports,
    async close() {
      for (const d of devices) {
        await d.flush();
        await d.close();
      }
    },
  };
}
