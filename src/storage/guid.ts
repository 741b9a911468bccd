// Snapshot identities (ZFS-style GUIDs): 128 random bits given to a snapshot when it is created,
// kept for its life and carried by streams, so an incremental stream can prove which snapshot it
// applies on (a name can be reused; an identity is not). Shown as 32 lowercase hex digits.
import { createHash, randomBytes } from 'node:crypto';

export const GUID_BYTES = 16;
export const GUID_PATTERN = /^[0-9a-f]{32}$/;

export function newGuid(): string {
  return randomBytes(GUID_BYTES).toString('hex');
}

/**
 * The identity of a snapshot recorded before identities existed: derived from what its records
 * hold, so it is the same at every open (a random one would change on each restart until the next
 * checkpoint stored it, breaking incremental streams taken in between).
 */
export function legacyGuid(volumeCreatedMs: number, volume: string, nodeId: number, createdMs: number, name: string): string {
  return createHash('sha256').update(`snapnbd-legacy-guid\0${volumeCreatedMs}\0${volume}\0${nodeId}\0${createdMs}\0${name}`)
    .digest().subarray(0, GUID_BYTES).toString('hex');
}
