// A fixed table of exports (name -> device): for tests and for serving plain devices. The volume
// registry (src/volumes) is the real resolver with snapshots, leases and busy rules.
import type { BlockDevice } from '../storage/device.ts';
import type { ExportCounters, ExportDescription, ExportLease, ExportResolver, ResolvedExport } from './exports.ts';

export function newCounters(): ExportCounters {
  return { connections: 0, requests: 0, bytesRead: 0, bytesWritten: 0, errors: 0 };
}

export class StaticExports implements ExportResolver {
  private readonly table = new Map<string, { device: BlockDevice; description: string; counters: ExportCounters }>();
  private readonly revokers = new Set<(reason: string) => void>();
  private readonly defaultName: string;

  constructor(defaultName: string) {
    this.defaultName = defaultName;
  }

  add(name: string, device: BlockDevice, description = ''): this {
    this.table.set(name, { device, description, counters: newCounters() });
    return this;
  }

  counters(name: string): ExportCounters | undefined {
    return this.table.get(name)?.counters;
  }

  list(): ExportDescription[] {
    return [...this.table].map(([name, e]) => ({ name, description: e.description }));
  }

  lookup(name: string): ResolvedExport | undefined {
    const real = name === '' ? this.defaultName : name;
    const e = this.table.get(real);
    return e ? { name: real, description: e.description, device: e.device } : undefined;
  }

  acquire(name: string, onRevoke: (reason: string) => void): ExportLease | undefined {
    const r = this.lookup(name);
    if (!r) return undefined;
    const counters = this.table.get(r.name)!.counters;
    counters.connections++;
    this.revokers.add(onRevoke);
    let released = false;
    return {
      ...r,
      counters,
      release: () => {
        if (released) return;
        released = true;
        counters.connections--;
        this.revokers.delete(onRevoke);
      },
    };
  }

  revokeAll(reason: string): void {
    for (const r of [...this.revokers]) r(reason);
  }
}
