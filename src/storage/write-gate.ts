// The snapshot barrier of one volume: counts the writes in flight and, for a control operation
// or a compaction pass, holds new ones until those in flight have drained (README "Control
// operations"). The data path checks `barrier` synchronously, so an open gate costs no await.
//
// A lighter mode for snapshot create and delete (`redirect`): writes are not held at all, they
// only stop going in place. A write that redirects to a fresh slot never touches a slot a
// snapshot can see, so only the writes already going in place must finish before the map is
// shared (create), and none may start until a delete is durable (the committed snapshot still
// holds the slots the delete left to the head alone). What writes would do after a snapshot
// anyway, without the stall of draining every write in flight behind a barrier.

export class WriteGate {
  private held: Promise<void> | null = null;
  private inflight = 0;
  private drained: (() => void) | null = null;
  /** Holders of `redirect()`: while any, no write goes in place. */
  private redirecting = 0;
  /** Writes in flight that chose to write in place (from the choice until their map update). */
  private inPlace = 0;
  private inPlaceDrained: (() => void)[] = [];

  /** What a new write waits for, or null when the gate is open. */
  get barrier(): Promise<void> | null {
    return this.held;
  }

  /** True while a snapshot create or delete asks writes to redirect instead of writing in place. */
  get noInPlace(): boolean {
    return this.redirecting > 0;
  }

  /** Counts a write in; the caller saw `barrier === null` (or awaited it) without yielding since. */
  enter(): void {
    this.inflight++;
  }

  leave(): void {
    if (--this.inflight === 0 && this.drained) this.drained();
  }

  /** A write chose to go in place (it saw `noInPlace` false without yielding since). */
  enterInPlace(): void {
    this.inPlace++;
  }

  /** ... and its data and map entries are in. */
  leaveInPlace(): void {
    if (--this.inPlace > 0) return;
    const waiters = this.inPlaceDrained;
    this.inPlaceDrained = [];
    for (const w of waiters) w();
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

  /**
   * From now on writes redirect instead of writing in place; resolves once the in-place writes in
   * flight are in (their data and map entries). Returns the release. Writes are never held.
   */
  async redirect(): Promise<() => void> {
    this.redirecting++;
    while (this.inPlace > 0) await new Promise<void>((r) => this.inPlaceDrained.push(r));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.redirecting--;
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
