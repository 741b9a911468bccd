// SIGHUP: reload what can change without a restart. Each part that can (the log level now; TLS
// material, access rules and schedules as they arrive) registers a hook; a reload runs them all in
// order, one failure never stops the others nor changes the failed part, and the outcome is logged
// as one line per hook.
import { isLogLevelName, log, logLevel, setLogLevel, type LogLevelName } from '../util/log.ts';
import { readSettings, SettingsFileError } from './settings-file.ts';

export interface ReloadHook {
  /** What it reloads, for the log ("log level", "tls"). */
  name: string;
  /** Applies the new setting; returns what changed ("info -> debug") or null when nothing did. */
  reload(): Promise<string | null>;
}

export interface ReloadOutcome {
  name: string;
  changed: string | null;
  error?: string;
}

export class Reloader {
  private readonly hooks: ReloadHook[] = [];
  private running: Promise<ReloadOutcome[]> | null = null;

  add(hook: ReloadHook): void {
    this.hooks.push(hook);
  }

  /** How many parts a reload re-reads. */
  get size(): number {
    return this.hooks.length;
  }

  /** Runs every hook; a SIGHUP during a reload joins it rather than starting another. */
  reload(): Promise<ReloadOutcome[]> {
    this.running ??= this.runAll().finally(() => (this.running = null));
    return this.running;
  }

  private async runAll(): Promise<ReloadOutcome[]> {
    const out: ReloadOutcome[] = [];
    for (const h of this.hooks) {
      try {
        const changed = await h.reload();
        out.push({ name: h.name, changed });
        log.info(`reload: ${h.name}: ${changed ?? 'unchanged'}`);
      } catch (e) {
        out.push({ name: h.name, changed: null, error: (e as Error).message });
        log.error(`reload: ${h.name}: kept the current setting`, e);
      }
    }
    return out;
  }
}

/** The log level from SNAPNBD_LOG_LEVEL in the --config file, else the --log-level given at start. */
export function logLevelHook(configPath: string, startLevel: LogLevelName): ReloadHook {
  return {
    name: 'log level',
    async reload() {
      const want = (await readSettings(configPath)).get('SNAPNBD_LOG_LEVEL') ?? startLevel;
      if (!isLogLevelName(want)) throw new SettingsFileError(`${configPath}: SNAPNBD_LOG_LEVEL '${want}' is not error, warn, info or debug`);
      const was = logLevel();
      if (want === was) return null;
      setLogLevel(want);
      return `${was} -> ${want}`;
    },
  };
}
