// The fill hook: a volume whose content is still arriving from elsewhere (an instant restore,
// src/backup/instant-restore.ts) has a FillSource. The data path asks it before touching the
// head: a read of an unfilled range waits until that range is filled; a write, trim or zero
// waits until the ranges it touches are filled *and* recorded as filled durably, so that a
// later fill (after a restart) can never write over the client's newer data; a source may let a
// request that covers whole unfilled blocks through without filling them (the request replaces
// them) and record them in `written`, before the request is answered. The source fills
// through the head device the engine gives it with `Store.attachFill`, whose writes skip the
// hook. The engine knows nothing else about where the bytes come from.

export interface FillSource {
  /** True when [offset, offset+len) has a byte not filled yet (for a write: or not recorded durably). */
  pending(offset: number, len: number, forWrite: boolean): boolean;
  /** Resolves once that range is filled (and, forWrite, recorded); rejects with a StorageError (EIO) if it cannot be. */
  ensure(offset: number, len: number, forWrite: boolean): Promise<void>;
  /** After a write, trim or zero that ensure() let through, with whether it succeeded: a source
   *  that let it replace whole unfilled blocks without filling them first marks those filled now,
   *  and recorded, before the request is answered (a failed one leaves them to be filled). */
  written?(offset: number, len: number, ok: boolean): Promise<void>;
}
