// Run by the bench harness beside a snapnbd server (`--kernel-stacks DIR`), never by the server:
// where the server's threads wait inside the kernel. Every SAMPLE_MS it reads the state of each
// thread of PID (/proc/PID/task/TID/stat); for each one in uninterruptible sleep (state D: waiting
// for the disk, a page lock, the file system's journal) it records the thread and its kernel stack
// (/proc/PID/task/TID/stack, readable by root only; without it the stack is left empty). The main
// thread is the event loop (every connection waits while it is blocked); the others are libuv's
// pool (the reads, writes and fdatasyncs handed to it) and V8's helpers.
//
// Usage: node kernel-stacks.mjs PID OUT. Stops when PID is gone or on SIGTERM and writes OUT:
// { pid, sampleMs, rounds: [endUs, gapMs][], blocked: [us, tid, stackIndex][], stacks: string[] },
// times on CLOCK_MONOTONIC in µs (process.hrtime: the same clock as the harness's).
import fs from 'node:fs';

const SAMPLE_MS = 2;
/** Frames kept per stack, innermost first (enough to name the wait and the system call). */
const FRAMES_MAX = 24;

const [pidArg, out] = process.argv.slice(2);
const pid = Number(pidArg);
if (!Number.isInteger(pid) || pid <= 0 || !out) {
  process.stderr.write('usage: node kernel-stacks.mjs PID OUT\n');
  process.exit(2);
}

const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const rounds = [];
const blocked = [];
const stacks = [];
const stackIds = new Map();
let last = nowUs();

function stackOf(path) {
  let text = '';
  try {
    text = fs.readFileSync(path, 'latin1');
  } catch {
    return '';
  }
  // "[<0>] folio_wait_bit_common+0x13e/0x340" -> "folio_wait_bit_common"
  return text.split('\n').filter(Boolean).slice(0, FRAMES_MAX).map((l) => l.replace(/^\[<[^>]*>\]\s*/, '').replace(/\+0x.*$/, '')).join(' < ');
}

function sample() {
  let tids;
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return false; // the server is gone
  }
  const t = nowUs();
  for (const tid of tids) {
    let stat;
    try {
      stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
    } catch {
      continue; // the thread ended
    }
    // The state follows the parenthesised name, which may itself hold spaces or parentheses.
    if (stat[stat.lastIndexOf(')') + 2] !== 'D') continue;
    const stack = stackOf(`/proc/${pid}/task/${tid}/stack`);
    let id = stackIds.get(stack);
    if (id === undefined) {
      id = stacks.length;
      stacks.push(stack);
      stackIds.set(stack, id);
    }
    blocked.push([t, Number(tid), id]);
  }
  rounds.push([t, Math.round((t - last) / 10) / 100]);
  last = t;
  return true;
}

function finish() {
  fs.writeFileSync(out, JSON.stringify({ pid, sampleMs: SAMPLE_MS, rounds, blocked, stacks }));
  process.exit(0);
}

process.on('SIGTERM', finish);
const timer = setInterval(() => {
  if (!sample()) {
    clearInterval(timer);
    finish();
  }
}, SAMPLE_MS);
