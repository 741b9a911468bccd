// Human sizes: parse `20G`, `64K`, `512` (binary suffixes) and format bytes for people.
const UNITS = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 } as const;

/** Bytes, or null when `s` is not a size. Accepts K/M/G/T/P with optional `iB`/`B`. */
export function parseSize(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?$/i.exec(s.trim());
  if (!m) return null;
  const unit = UNITS[m[2]!.toUpperCase() as keyof typeof UNITS];
  const n = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : null;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const digits = v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2);
  // Trailing zeros of the fraction only: 100 MiB stays 100 MiB.
  return i === 0 ? `${v} B` : `${digits.includes('.') ? digits.replace(/\.?0+$/, '') : digits} ${units[i]}`;
}
