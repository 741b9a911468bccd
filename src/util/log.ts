// A leveled logger to stderr; stdout is reserved for the machine-readable ready lines.
export const LogLevel = { error: 0, warn: 1, info: 2, debug: 3 } as const;
export type LogLevelName = keyof typeof LogLevel;

let threshold: number = LogLevel.info;

export function setLogLevel(level: LogLevelName): void {
  threshold = LogLevel[level];
}

export function isLogLevelName(s: string): s is LogLevelName {
  return Object.hasOwn(LogLevel, s);
}

function emit(level: LogLevelName, msg: string, err?: unknown): void {
  if (LogLevel[level] > threshold) return;
  let line = `${new Date().toISOString()} ${level} ${msg}`;
  if (err !== undefined) {
    const e = err as { message?: unknown; cause?: unknown };
    line += `: ${String(e?.message ?? err)}`;
    if (e?.cause !== undefined) line += ` (cause: ${String((e.cause as { message?: unknown })?.message ?? e.cause)})`;
  }
  process.stderr.write(line + '\n');
}

export const log = {
  error: (msg: string, err?: unknown) => emit('error', msg, err),
  warn: (msg: string, err?: unknown) => emit('warn', msg, err),
  info: (msg: string) => emit('info', msg),
  debug: (msg: string) => { if (threshold >= LogLevel.debug) emit('debug', msg); },
  enabled: (level: LogLevelName) => LogLevel[level] <= threshold,
};
