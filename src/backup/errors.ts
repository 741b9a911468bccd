// Backup errors: one class with a stable code (the control socket passes it on as
// `error.data.code`, like the store's codes). Messages name the bucket, object and endpoint,
// never a credential.
import { CodedError } from '../util/coded-error.ts';

export const BackupErrorCode = {
  /** The object store refused our credentials or signature (403). */
  TargetDenied: 'TARGET_DENIED',
  /** The bucket or directory of the target does not exist. */
  TargetNotFound: 'TARGET_NOT_FOUND',
  /** The object store could not be reached or kept failing after every retry. */
  TargetUnavailable: 'TARGET_UNAVAILABLE',
  /** `--backup-target` names no target of that name. */
  UnknownTarget: 'UNKNOWN_TARGET',
  BackupNotFound: 'BACKUP_NOT_FOUND',
  /** A block's content does not match its hash, or an object the manifest names is missing. */
  BackupCorrupt: 'BACKUP_CORRUPT',
  /** The target is encrypted and this server has no (or another) key. */
  KeyMismatch: 'KEY_MISMATCH',
  JobNotFound: 'JOB_NOT_FOUND',
  Cancelled: 'CANCELLED',
  InvalidTarget: 'INVALID_TARGET',
} as const;
export type BackupErrorCode = (typeof BackupErrorCode)[keyof typeof BackupErrorCode];

export class BackupError extends CodedError<BackupErrorCode> {
  override name = 'BackupError';
}

/** BACKUP_NOT_FOUND: the target has no backup of that id. */
export function backupNotFound(target: string, id: string): BackupError {
  return new BackupError(BackupErrorCode.BackupNotFound, `no backup '${id}' on target '${target}'`);
}
