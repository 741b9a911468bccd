// Lease bookkeeping: who holds which export (an NBD session per lease), the per-export counters,
// and revocation: a revoked session finishes what is in flight and closes, and the caller can
// wait until every lease it revoked is released (VOLUME_BUSY when that takes too long).
import type { ExportCounters } from '../server/exports.ts';
import { StoreError, StoreErrorCode } from '../storage/types.ts';
import { parseExportName } from './export-name.ts';

/** How long a forced rollback or delete waits for revoked sessions to close before giving up. */
export const REVOKE_WAIT_MS = 30_000;

export interface Lease {
  readonly exportName: string;
  readonly volume: string;
  readonly snapshot: string | null;
  readonly onRevoke: (reason: string) => void;
  revoked: boolean;
}

export class LeaseTable {
  private readonly leases = new Set<Lease>();
  private readonly counters = new Map<string, ExportCounters>();
  private readonly releaseWaiters = new Set<() => void>();
  private readonly revokeWaitMs: number;

  constructor(revokeWaitMs = REVOKE_WAIT_MS) {
    this.revokeWaitMs = revokeWaitMs;
  }

  /** Records a new holder of `exportName`; returns its counters and the idempotent release. */
  add(exportName: string, onRevoke: (reason: string) => void): { counters: ExportCounters; release: () => void } {
    const { volume, snapshot } = parseExportName(exportName);
    const lease: Lease = { exportName, volume, snapshot, onRevoke, revoked: false };
    this.leases.add(lease);
    const counters = this.countersOf(exportName);
    counters.connections++;
    let released = false;
    return {
      counters,
      release: () => {
        if (released) return;
        released = true;
        counters.connections--;
        this.leases.delete(lease);
        for (const wake of [...this.releaseWaiters]) wake();
      },
    };
  }

  /** NBD connections holding `exportName` now. */
  connections(exportName: string): number {
    let n = 0;
    for (const l of this.leases) if (l.exportName === exportName) n++;
    return n;
  }

  where(pred: (l: Lease) => boolean): Lease[] {
    return [...this.leases].filter(pred);
  }

  all(): Lease[] {
    return [...this.leases];
  }

  countersOf(exportName: string): ExportCounters {
    let c = this.counters.get(exportName);
    if (!c) {
      c = { connections: 0, requests: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };
      this.counters.set(exportName, c);
    }
    return c;
  }

  /** Counters by export name, sorted by name. */
  sortedCounters(): [string, ExportCounters][] {
    return [...this.counters].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  forgetCounters(pred: (exportName: string) => boolean): void {
    for (const key of [...this.counters.keys()]) if (pred(key)) this.counters.delete(key);
  }

  revoke(l: Lease, reason: string): void {
    if (l.revoked) return;
    l.revoked = true;
    try {
      l.onRevoke(reason);
    } catch {
      // A session that fails to stop is still waited for; its error is its own to log.
    }
  }

  async revokeAndWait(held: Lease[], reason: string): Promise<void> {
    if (held.length === 0) return;
    for (const l of held) this.revoke(l, reason);
    await this.waitReleased(held);
  }

  /** Resolves when none of `held` is still leased; VOLUME_BUSY after the revoke wait. */
  waitReleased(held: Lease[]): Promise<void> {
    const pending = (): boolean => held.some((l) => this.leases.has(l));
    if (!pending()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.releaseWaiters.delete(wake);
        reject(new StoreError(StoreErrorCode.VolumeBusy, `NBD connection(s) did not close within ${this.revokeWaitMs} ms after being asked to`));
      }, this.revokeWaitMs);
      const wake = (): void => {
        if (pending()) return;
        clearTimeout(timer);
        this.releaseWaiters.delete(wake);
        resolve();
      };
      this.releaseWaiters.add(wake);
    });
  }
}

/** The distinct export names held, for messages. */
export function describeHolders(held: Lease[]): string {
  return [...new Set(held.map((l) => l.exportName))].join(', ');
}
