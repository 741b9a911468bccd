// A refusal with a stable code (the store's, a backup's, a stream's or an import's, a
// schedule's): each layer lists its codes as an `as const` table and a union, and its error class
// is this with that union. The control socket passes the code on as `error.data.code`, all in one
// rule (src/control/errors.ts), so scripts match one vocabulary; the message is for a person.
// The NBD wire has its own kinds (src/protocol/errors.ts, StorageError in src/storage/device.ts):
// an NBD client is answered with an errno, never with these codes.
export class CodedError<C extends string> extends Error {
  readonly code: C;
  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
