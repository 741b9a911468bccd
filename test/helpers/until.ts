// Waiting for a server to get somewhere (a scheduled run, a retention pass), however long that
// takes on a loaded machine: polls until the probe answers something truthy, and fails naming
// what it waited for after a limit long enough to mean a bug, not a slow machine.

/** How often the probe is asked. */
export const UNTIL_POLL_MS = 100;
/** The default limit. */
export const UNTIL_LIMIT_MS = 30_000;

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The probe's first truthy answer. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = UNTIL_LIMIT_MS): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(UNTIL_POLL_MS);
  }
}
