// What the NBD server needs from the volume registry: export names resolved to block devices,
// and leases so the registry knows who is connected (rollback refuses a busy volume, a forced
// one revokes the leases, which disconnects those sessions cleanly).
import type { BlockDevice } from '../storage/device.ts';

export interface ExportDescription {
  /** Canonical name ('' resolved to the default export's real name). */
  name: string;
  /** Human text for NBD_OPT_LIST / NBD_INFO_DESCRIPTION, e.g. "1.0 GiB volume, backing foo.raw". */
  description: string;
}

/** Per-export counters the sessions bump and `server.stats` reports. */
export interface ExportCounters {
  connections: number;
  requests: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
}

export interface ResolvedExport extends ExportDescription {
  device: BlockDevice;
}

export interface ExportLease extends ResolvedExport {
  readonly counters: ExportCounters;
  /** Ends the lease; idempotent. The session calls it when it closes. */
  release(): void;
}

export interface ExportResolver {
  /** Every export, for NBD_OPT_LIST (volumes, then VOLUME@SNAPSHOT views). */
  list(): ExportDescription[];
  /** Resolve without holding anything (NBD_OPT_INFO). undefined: no such export. */
  lookup(name: string): ResolvedExport | undefined;
  /**
   * For a name lookup() does not resolve: why, when the export exists but cannot be served
   * (e.g. its backing file changed), as the text of the client's error reply. undefined: no such
   * export (or no reason known).
   */
  unavailable?(name: string): string | undefined;
  /**
   * Resolve and hold (NBD_OPT_GO / EXPORT_NAME). `onRevoke` is called when the registry needs the
   * session gone (forced rollback, volume deleted, server stopping): the session finishes what is
   * in flight, then closes. undefined: no such export.
   */
  acquire(name: string, onRevoke: (reason: string) => void): ExportLease | undefined;
}
