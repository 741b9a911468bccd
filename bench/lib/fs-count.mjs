// Preloaded into a snapnbd server through `--env NODE_OPTIONS=--import=bench/lib/fs-count.mjs`
// (with `--env SNAPNBD_FS_COUNT=DIR`), never by the server itself: how many reads and writes ran
// synchronously on the event loop and how many went to libuv's thread pool (src/storage/file-io.ts
// SyncIoStrategy chooses), with their bytes. At exit it writes DIR/fs-count-PID.json:
// { bin, calls: { name: [count, bytes] }, stalls: { name: synchronous calls over 10 ms } }. Plain JavaScript: the server runs without a TypeScript loader.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const COUNTED = ['read', 'readSync', 'write', 'writeSync', 'writev', 'writevSync'];
const dir = process.env.SNAPNBD_FS_COUNT;
const STALL_NS = 10_000_000n;
if (dir) {
  const calls = {};
  /** Synchronous calls over sync-io.ts's stall threshold (SYNC_IO_RULE.stallNs), by name. */
  const stalls = {};
  for (const name of COUNTED) {
    const orig = fs[name];
    const c = (calls[name] = [0, 0]);
    const vec = name.startsWith('writev');
    const sync = name.endsWith('Sync');
    fs[name] = function counted(fd, buf, off, len) {
      c[0]++;
      if (vec) for (const b of buf) c[1] += b.length;
      else c[1] += typeof len === 'number' ? len : typeof off === 'number' || off === undefined ? buf.length - (off ?? 0) : buf.length;
      if (!sync) return orig.apply(this, arguments);
      const t0 = process.hrtime.bigint();
      const r = orig.apply(this, arguments);
      if (process.hrtime.bigint() - t0 > STALL_NS) stalls[name] = (stalls[name] ?? 0) + 1;
      return r;
    };
  }
  syncBuiltinESMExports();
  process.on('exit', () => {
    fs.writeFileSync(`${dir}/fs-count-${process.pid}.json`, JSON.stringify({ bin: process.argv[1], calls, stalls }));
  });
}
