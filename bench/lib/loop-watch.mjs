// Preloaded into the snapnbd server by the bench harness (`--loop-watch DIR`; node --import), never
// by the server itself: what held the event loop, for bench/lib/loop-watch-report.ts to attribute.
// It records, on CLOCK_MONOTONIC in µs (process.hrtime: the same clock in every process, so the
// harness can lay its control calls beside these):
//   - late turns: a 1 ms timer that ran LATE_MS or more after its previous run (the loop was held);
//   - GC pauses of the main thread over GC_MIN_MS (perf_hooks 'gc' entries);
//   - synchronous fs calls over SYNC_MIN_MS (writeSync, readSync, statSync...: a slow one holds
//     the loop for its whole length).
// At exit it writes DIR/loop-watch-PID.json: { late: [endUs, ms][], gc: [startUs, ms, kind][],
// sync: [startUs, ms, name][] }. With SNAPNBD_LOOP_WATCH_STACK_MS=N (the harness's `--env`), each
// synchronous fs call of N ms or more also appends its JavaScript stack to DIR/stacks-PID.txt, to
// tell whose I/O it was. Plain JavaScript: the server runs without a TypeScript loader.
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { PerformanceObserver, performance } from 'node:perf_hooks';

const LATE_MS = 5;
const GC_MIN_MS = 1;
const SYNC_MIN_MS = 2;
const TICK_MS = 1;
const SYNC_CALLS = ['writeSync', 'writevSync', 'readSync', 'readvSync', 'statSync', 'fstatSync', 'fsyncSync', 'fdatasyncSync', 'openSync', 'closeSync', 'ftruncateSync'];

const dir = process.env.SNAPNBD_LOOP_WATCH;
const stackMs = Number(process.env.SNAPNBD_LOOP_WATCH_STACK_MS ?? Infinity);
if (dir) {
  const nowUs = () => Number(process.hrtime.bigint() / 1000n);
  const late = [];
  const gc = [];
  const sync = [];
  let last = nowUs();
  const tick = setInterval(() => {
    const t = nowUs();
    const ms = (t - last) / 1000;
    if (ms >= LATE_MS) late.push([t, Math.round(ms * 100) / 100]);
    last = t;
  }, TICK_MS);
  tick.unref();
  // performance.now() is ms since timeOrigin; this is timeOrigin on the hrtime clock, in µs.
  const originUs = nowUs() - performance.now() * 1000;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.duration >= GC_MIN_MS) gc.push([Math.round(originUs + e.startTime * 1000), Math.round(e.duration * 100) / 100, e.detail?.kind ?? 0]);
    }
  }).observe({ entryTypes: ['gc'] });
  for (const name of SYNC_CALLS) {
    const orig = fs[name];
    if (typeof orig !== 'function') continue;
    fs[name] = function watched(...args) {
      const t = nowUs();
      try {
        return orig.apply(this, args);
      } finally {
        const ms = (nowUs() - t) / 1000;
        if (ms >= SYNC_MIN_MS) sync.push([t, Math.round(ms * 100) / 100, name]);
        if (ms >= stackMs) fs.appendFileSync(`${dir}/stacks-${process.pid}.txt`, `${ms.toFixed(2)} ms ${name}\n${new Error().stack}\n\n`);
      }
    };
  }
  // ESM named imports of node:fs (the server's) see the wrapped functions.
  syncBuiltinESMExports();
  process.on('exit', () => {
    fs.writeFileSync(`${dir}/loop-watch-${process.pid}.json`, JSON.stringify({ late, gc, sync }));
  });
}
