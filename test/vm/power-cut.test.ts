// A real power cut: snapnbd runs inside the test VM (the host's Node binary and the shared
// libraries `ldd` names, on a read-only tools disk), its data dir on ext4 on a virtio disk backed
// by a host file. A client in the guest (power-cut-guest.mjs) writes stamped blocks with FLUSH
// and FUA and takes snapshots; the host SIGKILLs qemu on a random event (the guest's page cache
// is gone, as in a power cut) and boots again on the same disk: ext4 replays its journal, the
// store opens, and every block acknowledged before the last acknowledged FLUSH, every
// acknowledged FUA write and every answered snapshot (by content) must be there; nothing torn or
// misplaced. POWER_CUT_ROUNDS (default 10) rounds; the time they take is printed.
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Prng, testSeed } from '../helpers/prng.ts';
import { requires } from '../helpers/requires.ts';
import { REPO_ROOT, tempDir } from '../helpers/server.ts';
import { Guest } from './guest.ts';

const ROUNDS = Number(process.env['POWER_CUT_ROUNDS'] ?? 10);
const BLOCKS = 1024;
/** Longest a round may take to reach its cut (TCG on a busy 2-core box runs Node slowly). */
const ROUND_LIMIT_MS = 300_000;
const NODE = '/tools/node.sh';

const guests: Guest[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const g of guests) await g.kill();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The tools disk: node, its libraries and loader, snapnbd's dist/, the guest script. */
function buildToolsDisk(dir: string): string {
  const root = join(dir, 'tools');
  mkdirSync(join(root, 'lib'), { recursive: true });
  copyFileSync(process.execPath, join(root, 'node'));
  let loader = '';
  for (const line of execFileSync('ldd', [process.execPath], { encoding: 'utf8' }).split('\n')) {
    const m = /(\S+\.so[^\s]*)\s*(?:=>\s*(\S+))?\s*\(0x/.exec(line.trim());
    if (!m || line.includes('vdso')) continue;
    const path = m[2] ?? m[1]!;
    copyFileSync(path, join(root, 'lib', basename(path)));
    if (/ld-linux/.test(path)) loader = basename(path);
  }
  if (!loader) throw new Error('ldd named no dynamic loader for node');
  writeFileSync(join(root, 'node.sh'), `#!/bin/sh\nexec /tools/lib/${loader} --library-path /tools/lib /tools/node "$@"\n`, { mode: 0o755 });
  mkdirSync(join(root, 'app'));
  cpSync(join(REPO_ROOT, 'dist'), join(root, 'app', 'dist'), { recursive: true });
  cpSync(join(REPO_ROOT, 'package.json'), join(root, 'app', 'package.json'));
  writeFileSync(join(root, 'app', 'server.mjs'), "import { main } from './dist/cli/main.js';\nawait main(process.argv.slice(2));\n");
  cpSync(join(REPO_ROOT, 'test', 'vm', 'power-cut-guest.mjs'), join(root, 'app', 'guest.mjs'));
  const img = join(dir, 'tools.img');
  execFileSync('mkfs.ext4', ['-q', '-F', '-d', root, img, '256M']);
  return img;
}

interface Op { block: number; c: number; trim: boolean; fua: boolean }

describe('power cut in the VM', () => {
  it(`${ROUNDS} rounds: SIGKILL qemu, boot again, every acknowledged write and answered snapshot is there`, async () => {
    requires('qemu-system-x86_64', 'mkfs.ext4', 'ldd');
    const t0 = Date.now();
    const dir = tempDir('snapnbd-powercut-');
    dirs.push(dir);
    const tools = buildToolsDisk(dir);
    const data = join(dir, 'data.img');
    execFileSync('truncate', ['-s', '128M', data]);
    const fresh = testSeed();
    console.log(`power cut: rounds use seeds 500.. and fresh seed ${fresh} in the last (replay: SNAPNBD_SEED=${fresh})`);
    const drives = [`file=${tools},format=raw,if=virtio,readonly=on`, `file=${data},format=raw,if=virtio,cache=writeback`];

    // What the store must hold, as of the last cut: per block the acknowledged counter (0: zeros),
    // which newer counters may have landed, and each answered snapshot's blocks.
    let expected = new Array<number>(BLOCKS).fill(0);
    let later = new Map<number, Set<number>>();
    const known = new Map<string, number[]>();
    const deleteIssued = new Set<string>();
    let counter = 0;
    let fuaChecked = 0;
    const history: { block: number; what: string }[] = []; // every step, for messages
    let snapsChecked = 0;
    for (let round = 0; round <= ROUNDS; round++) {
      const seed = round === ROUNDS - 1 ? fresh : 500 + round;
      const rnd = new Prng(seed);
      const g = await Guest.boot({ name: `power-cut round ${round}`, drives });
      guests.push(g);
      await g.sh('mkdir -p /tools /data && mount -o ro /dev/vda /tools');
      if (round === 0) await g.sh('/sbin/mke2fs -q -t ext4 /dev/vdb');
      await g.sh('mount -t ext4 /dev/vdb /data');
      await g.run(`${NODE} /tools/app/guest.mjs ${NODE} /tools/app/server.mjs /data/store ${seed} ${counter} > /dev/ttyS0 2>&1 &`);
      // Whole lines only: a line cut short by the power cut never counts.
      const lines = async (): Promise<string[]> => {
        const t = g.transcript();
        return t.slice(0, t.lastIndexOf('\n')).split('\n').filter((l) => l.startsWith('@@'));
      };
      const deadline = Date.now() + ROUND_LIMIT_MS;
      const waitFor = async (what: string, cond: (ls: string[]) => boolean): Promise<string[]> => {
        for (;;) {
          const ls = await lines();
          const bad = ls.find((l) => l.startsWith('@@GUEST-ERROR') || l.startsWith('@@SERVER-EXIT'));
          if (bad) throw new Error(`round ${round}: ${bad}\n${g.transcript().slice(-3000)}`);
          if (cond(ls)) return ls;
          if (Date.now() > deadline) throw new Error(`round ${round}: timed out waiting for ${what}\n${g.transcript().slice(-3000)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      // 1. What survived the last cut.
      const ls = await waitFor('the verification', (l) => l.includes('@@VERIFIED'));
      expect(ls.filter((l) => l.startsWith('@@BAD')), `round ${round}: torn or misplaced blocks`).toEqual([]);
      const nodes = new Map(ls.filter((l) => l.startsWith('@@V ')).map((l) => {
        const [, name, list] = l.split(' ');
        return [name!, list!.split(',').map(Number)] as const;
      }));
      const head = nodes.get('head')!;
      expect(head.length).toBe(BLOCKS);
      for (let b = 0; b < BLOCKS; b++) {
        if (head[b] !== expected[b] && !later.get(b)?.has(head[b]!)) {
          throw new Error(`round ${round} block ${b}: holds ${head[b]}, acknowledged ${expected[b]}, later ${[...(later.get(b) ?? [])]}`);
        }
      }
      for (const [name, content] of known) {
        const got = nodes.get(name);
        if (!got) {
          expect(deleteIssued.has(name), `round ${round}: answered snapshot ${name} survives`).toBe(true);
          known.delete(name);
          continue;
        }
        snapsChecked++;
        const diff = [...content.keys()].filter((b) => got[b] !== content[b]);
        if (diff.length > 0) {
          throw new Error(`round ${round}: snapshot ${name} differs from what it held when answered at blocks ` +
            diff.slice(0, 10).map((b) => `${b} (holds ${got[b]}, was ${content[b]}; steps: ${history.filter((h) => h.block === b).map((h) => h.what).join(', ')})`).join('; '));
        }
      }
      if (round === ROUNDS) {
        await g.kill();
        break;
      }
      // 2. Work until the cut: after 1-3 acknowledged flushes and a random number of events more.
      const flushes = 1 + rnd.int(0, 2);
      const extra = rnd.int(0, 80);
      // Step lines may have arrived in the same read as the verification's end: count from there.
      const start = ls.indexOf('@@VERIFIED') + 1;
      const work = await waitFor('the cut event', (l) => {
        const mine = l.slice(start).filter((x) => x.startsWith('@@P '));
        let seen = 0;
        const f = mine.findIndex((y) => / F /.test(y) && ++seen >= flushes);
        return f >= 0 && mine.length - f > extra;
      });
      await g.kill(); // the power cut
      // Only lines that reached the host before the cut count (a later line never arrived).
      const ops = work.slice(start).filter((x) => x.startsWith('@@P ')).map((x) => x.slice(4).split(' '));
      // The console lost no line (else the check below would blame the store for the harness).
      ops.forEach((o, i) => expect(Number(o[0]), `round ${round}: console line ${i + 1}: ${o.join(' ')}`).toBe(i + 1));
      const log = ops.map((o) => o.join(' '));
      for (const o of ops) o.shift();
      const issued: Op[] = [];
      const acked: Op[] = [];
      let flushedUpTo = -1;
      const snapsNow: string[] = [];
      for (const [k, a, b] of ops) {
        if (k === 'I') issued.push({ block: Number(a), c: Number(b), trim: false, fua: false });
        else if (k === 'W' || k === 'U') acked.push({ block: Number(a), c: Number(b), trim: false, fua: k === 'U' });
        else if (k === 'F') flushedUpTo = Number(a);
        else if (k === 'S') snapsNow.push(a!);
        else if (k === 'X') deleteIssued.add(a!);
      }
      for (const l of log) {
        const [, k, a, b] = l.split(' ');
        if (k === 'I' || k === 'W' || k === 'U') history.push({ block: Number(a), what: `round ${round} #${l.split(' ')[0]} ${k} ${b}` });
        if (k === 'F' || k === 'S') history.push({ block: -1, what: `round ${round} ${k} ${a}` });
      }
      const base = head.slice();
      for (let b = 0; b < BLOCKS; b++) history.push({ block: b, what: `round ${round} began with the head at ${head[b]}` });
      for (const w of issued) counter = Math.max(counter, w.c);
      expected = base.slice();
      const floor = new Array<number>(BLOCKS).fill(flushedUpTo);
      for (const w of [...acked].sort((p, q) => p.c - q.c)) {
        if (w.c > flushedUpTo && !w.fua) continue;
        expected[w.block] = w.c;
        floor[w.block] = Math.max(floor[w.block]!, w.c);
        if (w.fua && w.c > flushedUpTo) fuaChecked++;
      }
      later = new Map();
      for (const w of issued) if (w.c > floor[w.block]!) {
        let s = later.get(w.block);
        if (!s) later.set(w.block, (s = new Set()));
        s.add(w.c);
      }
      for (const name of snapsNow) {
        const upTo = Number(name.slice(1));
        const content = base.slice();
        for (const w of [...issued].sort((p, q) => p.c - q.c)) if (w.c <= upTo) content[w.block] = w.c;
        known.set(name, content);
      }
      expect(flushedUpTo, `round ${round}: a flush was acknowledged before the cut`).toBeGreaterThanOrEqual(0);
    }
    const secs = (Date.now() - t0) / 1000;
    console.log(`power cut: ${ROUNDS} rounds in ${secs.toFixed(0)} s (${(secs / ROUNDS).toFixed(1)} s a round), ` +
      `${fuaChecked} FUA writes past the last flush and ${snapsChecked} snapshot checks by content`);
    expect(snapsChecked, 'answered snapshots checked after a cut').toBeGreaterThan(0);
  }, ROUNDS * ROUND_LIMIT_MS);
});
