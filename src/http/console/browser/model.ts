// What the server's event stream carries (src/http/console/watch.ts): the control methods' own
// results. Only the fields the pages use are typed; the rest (and fields added later, such as
// states and backup progress) are kept and shown as text.

export interface Volume {
  name: string;
  size: number;
  chunkSize: number;
  backing: string | null;
  origin: { volume: string; snapshot: string } | null;
  created: string;
  snapshots: number;
  referenced: number;
  used: number;
  written: number;
  readOnly: boolean;
  connections: number;
  state?: unknown;
  progress?: unknown;
  /** While an instant restore fills it (state `restoring`). */
  restore?: { percent: number; stalled: string | null };
}

export interface Snapshot {
  volume: string;
  name: string;
  created: string;
  state: unknown;
  progress?: unknown;
  description: string;
  size: number;
  referenced: number;
  used: number;
  written: number;
  exports: string[];
  connections: number;
  clones: string[];
}

export interface ConsoleState {
  at: string;
  volumes: Volume[];
  snapshots: Record<string, Snapshot[]>;
  lists: Record<string, unknown>;
}

export interface ServerInfo {
  version: string;
  listeners: string[];
}

/** The volume's state: its own `state` field when the server has one, else what its snapshots say. */
export function volumeState(v: Volume, snaps: Snapshot[]): unknown {
  // `restoring 37%` (a fraction: stateText reads numbers up to 1 as one).
  if (v.restore) return { state: v.state, progress: v.restore.percent / 100, ...(v.restore.stalled !== null ? { reason: `stalled: ${v.restore.stalled}` } : {}) };
  if (v.state !== undefined) return v.state;
  if (snaps.some((s) => s.state === 'creating')) return 'snapshotting';
  return 'ready';
}

/** The nbd:// URI of an export, from the server's first NBD listener. */
export function nbdUri(server: ServerInfo | null, exportName: string, pageHost: string): string | null {
  const l = server?.listeners.find((x) => x.startsWith('nbd '))?.slice(4);
  if (l === undefined) return null;
  if (l.startsWith('unix:')) return `nbd+unix:///${exportName}?socket=${l.slice(5)}`;
  const m = /^(.*):(\d+)$/.exec(l);
  if (!m) return null;
  let host = m[1]!;
  if (host === '0.0.0.0' || host === '[::]') host = pageHost;
  return `nbd://${host}:${m[2]}/${exportName}`;
}
