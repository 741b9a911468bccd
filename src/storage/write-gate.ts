// The snapshot barrier of one volume: counts the writes in flight and, for a control operation
// or a compaction pass, holds new ones until those in flight have drained (README "Control
// operations"). The data path checks `barrier` synchronously, so an open gate costs no await.

export class WriteGate {
  private held: Promise<void> | null = null;
  private inflight = 0;
  private drained: (() => void) | null = null;

  /** What a new write waits for, or null when the gate is open. */
  get barrier(): Promise<void> | null {
    return this.held;
  }

  /** Counts a write in; the caller saw `barrier === null` (or awaited it) without yielding since. */
  enter(): void {
    this.inflight++;
  }

  leave(): void {
    if (--this.inflight === 0 && this.drained) this.drained();
  }

  /** Raises the barrier (after any other holder's) and waits for in-flight writes; returns the release. */
  async hold(): Promise<() => void> {
    while (this.held) await this.held;
    let release!: () => void;
    this.held = new Promise<void>((r) => (release = r));
    if (this.inflight > 0) {
      await new Promise<void>((r) => (this.drained = r));
      this.drained = null;
    }
    return () => {
      this.held = null;
      release();
    };
  }
}

/** Holds the gates one after the other (as one barrier over all of them); returns the release. */
export async function holdAll(gates: WriteGate[]): Promise<() => void> {
  const releases: (() => void)[] = [];
  for (const g of gates) releases.push(await g.hold());
  return () => {
    for (const r of releases) r();
  };
}
