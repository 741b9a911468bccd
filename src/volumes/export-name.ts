// The export-name grammar: VOLUME is a volume's writable head, VOLUME@SNAPSHOT a read-only
// snapshot view; names themselves follow isValidName (src/storage/types.ts). Also the names
// `snapshot create` generates when none is given. Pure.
import { isValidName, NAME_MAX } from '../storage/types.ts';

/** Separates volume and snapshot in an export name; reserved in names. */
export const SNAPSHOT_SEPARATOR = '@';
/** Room kept for the `-NNN` suffix that makes a generated snapshot name unique. */
const GENERATED_SUFFIX_ROOM = 8;

export function exportNameOf(volume: string, snapshot: string | null): string {
  return snapshot === null ? volume : `${volume}${SNAPSHOT_SEPARATOR}${snapshot}`;
}

/** Splits `VOLUME@SNAPSHOT`; a name without '@' is a head. */
export function parseExportName(name: string): { volume: string; snapshot: string | null } {
  const at = name.indexOf(SNAPSHOT_SEPARATOR);
  if (at < 0) return { volume: name, snapshot: null };
  return { volume: name.slice(0, at), snapshot: name.slice(at + 1) };
}

/** Whether both parts of an export name are valid names (else nothing can be exported under it). */
export function isValidExportName(parts: { volume: string; snapshot: string | null }): boolean {
  return isValidName(parts.volume) && (parts.snapshot === null || isValidName(parts.snapshot));
}

/** `VOLUME-YYYYMMDDTHHMMSSZ`, the volume part shortened so that a `-NNN` suffix still fits. */
export function generatedSnapshotBase(volume: string, at: Date): string {
  const stamp = at.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z'); // 20261122T101500Z
  const room = NAME_MAX - stamp.length - 1 - GENERATED_SUFFIX_ROOM;
  return `${volume.slice(0, room)}-${stamp}`;
}

/** The first of `base`, `base-2`, `base-3`, ... that is not taken. */
export function uniqueName(base: string, taken: ReadonlySet<string>): string {
  if (!taken.has(base)) return base;
  for (let i = 2; ; i++) {
    const candidate = `${base}-${i}`;
    if (!taken.has(candidate)) return candidate;
  }
}
