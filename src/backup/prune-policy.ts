// Which backups a retention policy keeps (restic's rules): newest first, keep-last keeps the N
// newest; keep-daily/weekly/monthly keep the newest backup of each of the N most recent days,
// ISO weeks or months that have one. Pure.

export interface RetentionPolicy {
  keepLast: number;
  keepDaily: number;
  keepWeekly: number;
  keepMonthly: number;
}

function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const year = t.getUTCFullYear();
  const week = Math.ceil(((t.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** Ids to keep, for backups given with their creation time. */
export function selectKept(backups: { id: string; created: string }[], p: RetentionPolicy): Set<string> {
  const sorted = [...backups].sort((a, b) => (a.created > b.created ? -1 : a.created < b.created ? 1 : a.id > b.id ? -1 : 1));
  const keep = new Set<string>();
  sorted.slice(0, p.keepLast).forEach((b) => keep.add(b.id));
  const rule = (n: number, bucket: (d: Date) => string): void => {
    const seen = new Set<string>();
    for (const b of sorted) {
      if (seen.size >= n) break;
      const k = bucket(new Date(b.created));
      if (seen.has(k)) continue;
      seen.add(k);
      keep.add(b.id);
    }
  };
  rule(p.keepDaily, (d) => d.toISOString().slice(0, 10));
  rule(p.keepWeekly, isoWeek);
  rule(p.keepMonthly, (d) => d.toISOString().slice(0, 7));
  return keep;
}
