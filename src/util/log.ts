// A leveled logger to stderr; stdout is reserved for the machine-readable ready lines. Two formats:
// text for people (`TIME LEVEL message key=value: error (cause: ...)`) and, with
// `--log-format json`, one JSON object per line for log shippers:
// {"time","level","message","fields"?,"error"?,"cause"?}.
export const LogLevel = { error: 0, warn: 1, info: 2, debug: 3 } as const;
export type LogLevelName = keyof typeof LogLevel;
export const LOG_FORMATS = ['text', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];
/** Structured context of a log line (export, volume, counts...). */
export type LogFields = Readonly<Record<string, string | number | boolean | null>>;

let threshold: number = LogLevel.info;
let format: LogFormat = 'text';
let sink: (line: string) => void = (line) => process.stderr.write(line);

export function setLogLevel(level: LogLevelName): void {
  threshold = LogLevel[level];
}

export function logLevel(): LogLevelName {
  return (Object.keys(LogLevel) as LogLevelName[]).find((k) => LogLevel[k] === threshold)!;
}

export function isLogLevelName(s: string): s is LogLevelName {
  return Object.hasOwn(LogLevel, s);
}

export function setLogFormat(f: LogFormat): void {
  format = f;
}

export function isLogFormat(s: string): s is LogFormat {
  return (LOG_FORMATS as readonly string[]).includes(s);
}

/** Tests capture lines here instead of stderr. Returns the previous sink. */
export function setLogSink(s: (line: string) => void): (line: string) => void {
  const prev = sink;
  sink = s;
  return prev;
}

function messageOf(x: unknown): string {
  return String((x as { message?: unknown } | null)?.message ?? x);
}

function emit(level: LogLevelName, msg: string, err?: unknown, fields?: LogFields): void {
  if (LogLevel[level] > threshold) return;
  const time = new Date().toISOString();
  const cause = err === undefined ? undefined : (err as { cause?: unknown } | null)?.cause;
  if (format === 'json') {
    const o: Record<string, unknown> = { time, level, message: msg };
    if (fields && Object.keys(fields).length > 0) o.fields = fields;
    if (err !== undefined) o.error = messageOf(err);
    if (cause !== undefined) o.cause = messageOf(cause);
    sink(JSON.stringify(o) + '\n');
    return;
  }
  let line = `${time} ${level} ${msg}`;
  if (fields) for (const [k, v] of Object.entries(fields)) line += ` ${k}=${JSON.stringify(v)}`;
  if (err !== undefined) line += `: ${messageOf(err)}`;
  if (cause !== undefined) line += ` (cause: ${messageOf(cause)})`;
  sink(line + '\n');
}

export const log = {
  error: (msg: string, err?: unknown, fields?: LogFields) => emit('error', msg, err, fields),
  warn: (msg: string, err?: unknown, fields?: LogFields) => emit('warn', msg, err, fields),
  info: (msg: string, fields?: LogFields) => emit('info', msg, undefined, fields),
  debug: (msg: string, fields?: LogFields) => { if (threshold >= LogLevel.debug) emit('debug', msg, undefined, fields); },
  enabled: (level: LogLevelName) => LogLevel[level] <= threshold,
};
