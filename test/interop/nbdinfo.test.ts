// nbdinfo (libnbd) against snapnbd and nbdkit memory: flags, sizes, block sizes, the export list,
// meta contexts, the allocation map after writes, and the empty export name.
import { describe, expect, it } from 'vitest';
import { requires } from '../helpers/requires.ts';
import { PEER_KINDS, startSnapnbd, withPeers } from '../helpers/peers.ts';
import { NBDSH_ENV, mustRun, tool } from './tool.ts';

const MiB = 2 ** 20;

interface InfoExport {
  'export-name': string;
  description?: string;
  'export-size': number;
  contexts?: string[];
  [flag: string]: unknown;
}

async function infoJson(args: string[]): Promise<{ protocol: string; structured: boolean; exports: InfoExport[] }> {
  const r = await mustRun('nbdinfo', ['--json', ...args]);
  return JSON.parse(r.stdout) as { protocol: string; structured: boolean; exports: InfoExport[] };
}

interface MapEntry { offset: number; length: number; type: number; description: string }

async function map(uri: string): Promise<MapEntry[]> {
  const r = await mustRun('nbdinfo', ['--map=base:allocation', '--json', uri]);
  return JSON.parse(r.stdout) as MapEntry[];
}

/** Merge adjacent entries of the same type: servers choose their own extent boundaries. */
function merged(entries: MapEntry[]): { offset: number; length: number; description: string }[] {
  const out: { offset: number; length: number; description: string }[] = [];
  for (const e of entries) {
    const last = out.at(-1);
    if (last && last.description === e.description && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, description: e.description });
  }
  return out;
}

/** nbdsh with `h` connected to uri, or with no handle when uri is null. */
async function nbdsh(uri: string | null, code: string): Promise<string> {
  const r = await mustRun('nbdsh', [...(uri === null ? ['-n'] : ['-u', uri]), '-c', code], { env: NBDSH_ENV });
  return r.stdout;
}

describe('nbdinfo', () => {
  it.each(PEER_KINDS)('--json reports size and every capability flag (%s)', async (kind) => {
    requires('nbdinfo', 'nbdkit');
    await withPeers([kind], async (uri) => {
      const info = await infoJson([uri]);
      expect(info.protocol).toBe('newstyle-fixed');
      expect(info.structured).toBe(true);
      const e = info.exports[0]!;
      expect(e['export-size']).toBe(64 * MiB);
      expect(e).toMatchObject({
        is_read_only: false, is_rotational: false, can_flush: true, can_fua: true, can_trim: true,
        can_zero: true, can_fast_zero: true, can_multi_conn: true, can_df: true, can_cache: true,
      });
      expect(e.contexts).toContain('base:allocation');
      if (kind === 'snapnbd') {
        // nbdkit 1.32 memory advertises no block sizes; snapnbd must, without being asked.
        expect(e['export-name']).toBe('v');
        expect(e.description).toBe('volume v: 64 MiB, 0 snapshots');
        expect(e).toMatchObject({ block_size_minimum: 1, block_size_preferred: 65536, block_size_maximum: 32 * MiB }); // preferred: the chunk size
      }
    });
  });

  it.each(PEER_KINDS)('--can and --is answer by exit code (%s)', async (kind) => {
    requires('nbdinfo', 'nbdkit');
    await withPeers([kind], async (uri) => {
      for (const cap of ['connect', 'flush', 'fua', 'trim', 'zero', 'fast-zero', 'df', 'multi-conn', 'cache', 'structured-reply']) {
        const r = await tool('nbdinfo', ['--can', cap, uri]);
        expect(r.code, `--can ${cap}: ${r.stderr}`).toBe(0);
      }
      for (const what of ['read-only', 'rotational']) {
        const r = await tool('nbdinfo', ['--is', what, uri]);
        expect(r.code, `--is ${what}: ${r.stderr}`).toBe(2); // 2 = false, 0 = true, 1 = error
      }
    });
  });

  it('--list shows every volume and image with its description and size', async () => {
    requires('nbdinfo');
    const peer = await startSnapnbd({ snapnbd: { args: ['--volume', 'w=16M', '--volume', 'big-one=3G'] } });
    try {
      const list = await infoJson(['--list', peer.uri('')]);
      const byName = new Map(list.exports.map((e) => [e['export-name'], e]));
      expect([...byName.keys()].sort()).toEqual(['big-one', 'v', 'w']);
      expect(byName.get('v')!['export-size']).toBe(64 * MiB);
      expect(byName.get('w')!['export-size']).toBe(16 * MiB);
      expect(byName.get('big-one')!['export-size']).toBe(3 * 2 ** 30);
      for (const [name, e] of byName) expect(e.description, name).toMatch(new RegExp(name));
      const text = await mustRun('nbdinfo', ['--list', peer.uri('')]);
      expect(text.stdout).toContain('export="w"');
      expect(text.stdout).toContain('description: volume w');
    } finally {
      await peer.stop();
    }
  });

  it.each(PEER_KINDS)('lists and selects the base:allocation meta context (%s)', async (kind) => {
    requires('nbdsh', 'nbdkit');
    await withPeers([kind], async (uri) => {
      const out = await nbdsh(null, [
        'h2 = nbd.NBD()',
        'h2.set_opt_mode(True)',
        `h2.connect_uri(${JSON.stringify(uri)})`,
        'names = []',
        'h2.opt_list_meta_context(lambda name: names.append(name) or 0)',
        'print("listed", sorted(names))',
        'h2.add_meta_context("base:allocation")',
        'h2.opt_go()',
        'print("selected", h2.can_meta_context("base:allocation"))',
        'h2.shutdown()',
      ].join('\n'));
      expect(out).toContain("listed ['base:allocation']");
      expect(out).toContain('selected True');
    });
  });

  it.each(PEER_KINDS)('--map shows data where written and holes elsewhere (%s)', async (kind) => {
    requires('nbdinfo', 'nbdsh', 'nbdkit');
    await withPeers([kind], async (uri) => {
      expect(merged(await map(uri))).toEqual([{ offset: 0, length: 64 * MiB, description: 'hole,zero' }]);
      await nbdsh(uri, [
        `h.pwrite(b"\\x01" * ${2 * MiB}, ${4 * MiB})`,
        `h.pwrite(b"\\x02" * ${MiB}, ${32 * MiB})`,
        `h.pwrite(b"\\x03" * ${2 * MiB}, ${40 * MiB})`,
        `h.trim(${MiB}, ${40 * MiB})`,
        `h.zero(${MiB}, ${41 * MiB})`,
      ].join('\n'));
      expect(merged(await map(uri))).toEqual([
        { offset: 0, length: 4 * MiB, description: 'hole,zero' },
        { offset: 4 * MiB, length: 2 * MiB, description: 'data' },
        { offset: 6 * MiB, length: 26 * MiB, description: 'hole,zero' },
        { offset: 32 * MiB, length: MiB, description: 'data' },
        { offset: 33 * MiB, length: 31 * MiB, description: 'hole,zero' },
      ]);
    });
  });

  it('reaches the default export through the empty export name', async () => {
    requires('nbdinfo', 'nbdsh');
    const peer = await startSnapnbd({ snapnbd: { args: ['--volume', 'other=8M', '--default-export', 'v'] } });
    try {
      const byEmpty = await infoJson([peer.uri('')]);
      expect(byEmpty.exports[0]!['export-size']).toBe(64 * MiB);
      await nbdsh(peer.uri(''), 'h.pwrite(b"written through the empty name", 12345)');
      const back = await nbdsh(peer.uri('v'), 'print(h.pread(30, 12345).decode())');
      expect(back.trim()).toBe('written through the empty name');
    } finally {
      await peer.stop();
    }
  });
});
