// Runs `fn` over items with at most `n` at once; the first failure (or an abort) stops new
// starts, waits for those running, and is thrown.
import { BackupError, BackupErrorCode } from './errors.ts';

export async function runPool<T>(items: Iterable<T>, n: number, signal: AbortSignal | undefined, fn: (item: T) => Promise<void>): Promise<void> {
  const it = items[Symbol.iterator]();
  let failure: unknown = null;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (failure !== null) return;
      if (signal?.aborted) {
        failure ??= new BackupError(BackupErrorCode.Cancelled, 'cancelled');
        return;
      }
      const next = it.next();
      if (next.done) return;
      try {
        await fn(next.value);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, n) }, worker));
  if (failure !== null) throw failure;
}

export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new BackupError(BackupErrorCode.Cancelled, 'cancelled');
}
