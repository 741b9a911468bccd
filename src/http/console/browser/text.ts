// The texts the pages share: sizes, times, counts and states. Pure (no DOM), so node tests check
// them directly.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** The CLI's format (src/util/size.ts), which the browser cannot import; a test holds them equal. */
export function formatSize(bytes: number): string {
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);
  // Trailing zeros of the fraction only: 100 MiB stays 100 MiB.
  return i === 0 ? `${v} B` : `${digits.includes('.') ? digits.replace(/\.?0+$/, '') : digits} ${UNITS[i]}`;
}

/** `2026-11-30 07:40:12` in the browser's time zone. */
export function formatTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * Any state as text: a string as it is, an object's `state` (with `reason` when it failed), and a
 * `progress` (0..1 or a percentage) appended. States this page has never heard of still show.
 */
export function stateText(state: unknown, progress?: unknown): string {
  let text: string;
  if (state === undefined || state === null) text = '—';
  else if (typeof state === 'string' || typeof state === 'number' || typeof state === 'boolean') text = String(state);
  else if (typeof state === 'object') {
    const o = state as Record<string, unknown>;
    if (o.state !== undefined) return stateText(o.state, o.progress ?? progress) + (typeof o.reason === 'string' ? `: ${o.reason}` : '');
    text = JSON.stringify(state);
  } else text = String(state);
  if (typeof progress === 'number' && Number.isFinite(progress) && !text.includes('%')) {
    const pct = progress <= 1 ? progress * 100 : progress;
    text += ` ${Math.floor(pct)}%`;
  }
  return text;
}
