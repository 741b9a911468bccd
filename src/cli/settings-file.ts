// `serve --config FILE`: settings a running server re-reads on SIGHUP, in the KEY=VALUE format of
// /etc/default files (systemd's EnvironmentFile), so one file can hold both the unit's command-line
// options (SNAPNBD_OPTS, which only systemd reads) and these settings. Lines: `KEY=VALUE`,
// `KEY="VALUE"` or `KEY='VALUE'`, `# comments`, blanks; `export KEY=...` is accepted too.
import { readFile } from 'node:fs/promises';

/** A settings file larger than this is refused (it holds a few lines). */
export const SETTINGS_FILE_MAX_BYTES = 64 * 1024;

export class SettingsFileError extends Error {}

export function parseSettings(text: string, source: string): Map<string, string> {
  const out = new Map<string, string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new SettingsFileError(`${source}:${i + 1}: not KEY=VALUE: ${line.slice(0, 80)}`);
    let v = m[2]!;
    const q = /^"(.*)"$|^'(.*)'$/.exec(v);
    if (q) v = q[1] ?? q[2]!;
    out.set(m[1]!, v);
  });
  return out;
}

export async function readSettings(path: string): Promise<Map<string, string>> {
  let buf: Buffer;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw new SettingsFileError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (buf.length > SETTINGS_FILE_MAX_BYTES) throw new SettingsFileError(`${path} is larger than ${SETTINGS_FILE_MAX_BYTES} bytes`);
  return parseSettings(buf.toString('utf8'), path);
}
