// When the background commit runs (README.md "Commit protocol", the timer). Metadata naming fresh
// data can only be committed after that data is fdatasynced; while a client streams fresh chunks,
// a commit every tick synced the stream at the disk's speed and slowed every write meanwhile
// (pwritev 5x slower during the syncs, seqwrite-1m half as fast: bench/README.md, "Sequential
// writes: the background commit waits for a quiet tick"). NBD promises nothing for writes not
// yet FLUSHed, so, like ext4's delayed allocation (data written back after ~30 s), metadata waits
// while more keeps arriving, up to a bound on its age and on its memory. Pure: the journal feeds it.

/** Ticks metadata may wait while more keeps arriving: 30 s at the default 5 s interval. */
export const COMMIT_DEFER_TICKS_MAX = 6;
/** Queued record bytes past which the next tick commits however busy the writers are. */
export const COMMIT_DEFER_BYTES_MAX = 16 * 1024 * 1024;

export class CommitPacer {
  /** Ticks the pending metadata has waited so far. */
  private waited = 0;
  /** `loggedBytes` at the previous tick: equal now means nothing was logged since. */
  private loggedAtTick = 0;

  /**
   * At a tick of the timer: whether to commit now. `pending`: metadata waits for a commit;
   * `loggedBytes`: every record byte ever logged (only grows); `pendingBytes`: the bytes waiting.
   */
  due(pending: boolean, loggedBytes: number, pendingBytes: number): boolean {
    const busy = loggedBytes !== this.loggedAtTick;
    this.loggedAtTick = loggedBytes;
    if (!pending) {
      this.waited = 0;
      return false;
    }
    this.waited++;
    if (busy && this.waited < COMMIT_DEFER_TICKS_MAX && pendingBytes < COMMIT_DEFER_BYTES_MAX) return false;
    this.waited = 0;
    return true;
  }
}
