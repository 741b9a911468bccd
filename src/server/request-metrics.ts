// Per-export request figures for the metrics endpoint: requests, bytes and latency by command,
// errors by errno, requests in flight. Sessions call start() and finish() around each request;
// the collector reads exports() at scrape time. Label values come from fixed tables (an unknown
// command or errno counts as 'other'), so no client can grow the number of series.
import { Cmd, NbdErrno } from '../protocol/constants.ts';
import { Histogram, LATENCY_BUCKETS_SECONDS } from '../util/histogram.ts';

/** Command label values: Cmd codes 0..BLOCK_STATUS, then 'other'. DISC is never counted. */
export const COMMAND_LABELS = ['read', 'write', 'disc', 'flush', 'trim', 'cache', 'write_zeroes', 'block_status', 'other'] as const;
const OTHER_COMMAND = COMMAND_LABELS.length - 1;
/** Commands whose length is a byte range they move or change. */
const BYTES_COUNTED: ReadonlySet<number> = new Set([Cmd.READ, Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES]);

const ERRNO_LABELS: ReadonlyMap<number, string> = new Map(
  Object.entries(NbdErrno).filter(([, v]) => v !== NbdErrno.OK).map(([k, v]) => [v, k]),
);

export interface CommandFigures {
  requests: number;
  bytes: number;
  latency: Histogram;
  /** errno name -> count */
  errors: Map<string, number>;
}

export interface ExportFigures {
  inFlight: number;
  /** Indexed like COMMAND_LABELS; null until that command is first seen. */
  commands: (CommandFigures | null)[];
}

export class RequestMetrics {
  private readonly byExport = new Map<string, ExportFigures>();

  /** A request was read; returns its start time for finish(). */
  start(exportName: string): number {
    this.figures(exportName).inFlight++;
    return performance.now();
  }

  /** Its reply was queued: errno OK, or the errno the client got. */
  finish(exportName: string, cmd: number, length: number, errno: number, startedMs: number): void {
    const f = this.figures(exportName);
    f.inFlight--;
    const i = cmd >= 0 && cmd < OTHER_COMMAND ? cmd : OTHER_COMMAND;
    const c = f.commands[i] ??= { requests: 0, bytes: 0, latency: new Histogram(LATENCY_BUCKETS_SECONDS), errors: new Map() };
    c.requests++;
    c.latency.observe((performance.now() - startedMs) / 1000);
    if (errno === NbdErrno.OK) {
      if (BYTES_COUNTED.has(cmd)) c.bytes += length;
    } else {
      const name = ERRNO_LABELS.get(errno) ?? 'other';
      c.errors.set(name, (c.errors.get(name) ?? 0) + 1);
    }
  }

  /** Every export seen, for a scrape. */
  exports(): ReadonlyMap<string, ExportFigures> {
    return this.byExport;
  }

  /** Forget exports that no longer exist (deleted volumes, snapshots) and have nothing in flight. */
  retainOnly(names: ReadonlySet<string>): void {
    for (const [name, f] of this.byExport) if (!names.has(name) && f.inFlight === 0) this.byExport.delete(name);
  }

  private figures(exportName: string): ExportFigures {
    let f = this.byExport.get(exportName);
    if (!f) {
      f = { inFlight: 0, commands: COMMAND_LABELS.map(() => null) };
      this.byExport.set(exportName, f);
    }
    return f;
  }
}
