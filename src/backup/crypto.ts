// Block naming and optional encryption. Plain targets name a block by the SHA-256 of its bytes.
// Encrypted targets name it by HMAC-SHA256 under a name key (the store cannot test a guess of
// the content) and store AES-256-GCM(nonce, data, aad = the name): a block cannot be swapped
// for another one without the tag failing. Both keys derive from one 32-byte key file that never
// leaves the host.
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { BackupError, BackupErrorCode } from './errors.ts';

export const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** How much longer a sealed object is than its plain bytes. */
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES;

export interface Sealer {
  readonly encrypted: boolean;
  /** The object name of a block with these bytes (64 hex digits). */
  nameOf(data: Buffer): string;
  /** nameOf's HMAC key; null when a name is the plain SHA-256 (then it is also the object's payload hash). */
  readonly nameKey: Buffer | null;
  seal(data: Buffer, aad: string): Buffer;
  /** The plain bytes; throws BACKUP_CORRUPT when the tag fails. */
  open(data: Buffer, aad: string, what: string): Buffer;
  /** A value stored in the target's config that tells a wrong key at once. */
  readonly keyCheck: string | null;
}

/** A key file holds 32 raw bytes or 64 hex digits (newline allowed). */
export function loadKey(path: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (e) {
    throw new BackupError(BackupErrorCode.KeyMismatch, `cannot read key file ${path}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const text = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  if (raw.length === KEY_BYTES) return raw;
  throw new BackupError(BackupErrorCode.KeyMismatch, `key file ${path} must hold ${KEY_BYTES} bytes or ${KEY_BYTES * 2} hex digits`);
}

export const plainSealer: Sealer = {
  encrypted: false,
  keyCheck: null,
  nameKey: null,
  nameOf: (data) => createHash('sha256').update(data).digest('hex'),
  seal: (data) => data,
  open: (data) => data,
};

export function keySealer(key: Buffer): Sealer {
  const derive = (label: string): Buffer => createHmac('sha256', key).update(label).digest();
  const nameKey = derive('snapnbd-backup-block-name');
  const encKey = derive('snapnbd-backup-encryption');
  return {
    encrypted: true,
    keyCheck: derive('snapnbd-backup-key-check').subarray(0, 16).toString('hex'),
    nameKey,
    nameOf: (data) => createHmac('sha256', nameKey).update(data).digest('hex'),
    seal(data, aad) {
      const nonce = randomBytes(NONCE_BYTES);
      const c = createCipheriv('aes-256-gcm', encKey, nonce);
      c.setAAD(Buffer.from(aad));
      const body = Buffer.concat([c.update(data), c.final()]);
      return Buffer.concat([nonce, body, c.getAuthTag()]);
    },
    open(data, aad, what) {
      if (data.length < NONCE_BYTES + TAG_BYTES) throw new BackupError(BackupErrorCode.BackupCorrupt, `${what}: too short to be sealed`);
      const d = createDecipheriv('aes-256-gcm', encKey, data.subarray(0, NONCE_BYTES));
      d.setAAD(Buffer.from(aad));
      d.setAuthTag(data.subarray(data.length - TAG_BYTES));
      try {
        return Buffer.concat([d.update(data.subarray(NONCE_BYTES, data.length - TAG_BYTES)), d.final()]);
      } catch {
        throw new BackupError(BackupErrorCode.BackupCorrupt, `${what}: authentication failed (corrupt, or sealed with another key)`);
      }
    },
  };
}
