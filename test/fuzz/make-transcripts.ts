// Client byte transcripts, one per scenario, for the session fuzz test. Each is a list of frames
// (client flags, one option, one request with its payload, ...) so the fuzzer can mutate at frame
// boundaries; the .bin files under transcripts/ are the frames concatenated.
// Regenerate: npx tsx test/fuzz/make-transcripts.ts   (the fuzz test checks the files match.)
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClientFlag, Cmd, CmdFlag, Info, Opt } from '../../src/protocol/constants.ts';
import { encodeClientFlags, encodeInfoRequest, encodeMetaContextRequest, encodeOption } from '../../src/protocol/handshake.ts';
import { encodeRequestHeader } from '../../src/protocol/transmission.ts';

export const TRANSCRIPT_DIR = join(dirname(fileURLToPath(import.meta.url)), 'transcripts');
/** The fuzz session serves these: a writable 'disk' and a read-only 'snap'. */
export const FUZZ_DISK_SIZE = 1024 * 1024;

export interface Scenario { name: string; frames: Buffer[] }

const FIXED = ClientFlag.FixedNewstyle | ClientFlag.NoZeroes;
let cookieSeq = 0;

function req(type: number, flags: number, offset: number, length: number, payload?: Buffer): Buffer {
  const cookie = Buffer.alloc(8);
  cookie.writeUInt32BE(0xfeed0000 + ++cookieSeq, 4);
  const h = encodeRequestHeader({ type, flags, cookie, offset, length });
  return payload ? Buffer.concat([h, payload]) : h;
}

function fill(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b.writeUInt8((i * 13 + seed) & 0xff, i);
  return b;
}

const go = (name = 'disk'): Buffer => encodeOption(Opt.GO, encodeInfoRequest(name, []));
const disc = (): Buffer => req(Cmd.DISC, 0, 0, 0);

export function scenarios(): Scenario[] {
  cookieSeq = 0;
  const K = 1024;
  return [
    { name: 'newstyle-fixed-go-simple', frames: [
      encodeClientFlags(FIXED), go(),
      req(Cmd.WRITE, 0, 4 * K, 4 * K, fill(4 * K, 1)),
      req(Cmd.WRITE, CmdFlag.FUA, 100, 7, fill(7, 2)),
      req(Cmd.READ, 0, 0, 16 * K),
      req(Cmd.FLUSH, 0, 0, 0),
      req(Cmd.TRIM, 0, 8 * K, 4 * K),
      req(Cmd.WRITE_ZEROES, CmdFlag.NO_HOLE, 12 * K, 4 * K),
      req(Cmd.CACHE, 0, 0, 64 * K),
      disc(),
    ] },
    { name: 'newstyle-fixed-go-structured', frames: [
      encodeClientFlags(FIXED),
      encodeOption(Opt.STRUCTURED_REPLY),
      encodeOption(Opt.SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation'])),
      go(),
      req(Cmd.WRITE, 0, 70 * K, 3 * K, fill(3 * K, 3)),
      req(Cmd.READ, 0, 0, 256 * K),
      req(Cmd.READ, CmdFlag.DF, 64 * K, 128 * K),
      req(Cmd.BLOCK_STATUS, 0, 0, 512 * K),
      req(Cmd.BLOCK_STATUS, CmdFlag.REQ_ONE, 64 * K, 64 * K),
      req(Cmd.WRITE_ZEROES, CmdFlag.FAST_ZERO, 0, 4 * K),
      req(Cmd.READ, 0, FUZZ_DISK_SIZE - 1, 2),
      disc(),
    ] },
    { name: 'newstyle-export-name-nozeroes', frames: [
      encodeClientFlags(FIXED), encodeOption(Opt.EXPORT_NAME, Buffer.from('disk')),
      req(Cmd.READ, 0, 0, 512), disc(),
    ] },
    { name: 'newstyle-export-name-zeroes', frames: [
      encodeClientFlags(ClientFlag.FixedNewstyle), encodeOption(Opt.EXPORT_NAME, Buffer.from('')),
      req(Cmd.WRITE, 0, 0, 512, fill(512, 4)), req(Cmd.READ, 0, 0, 512), disc(),
    ] },
    { name: 'newstyle-unfixed-export-name', frames: [
      encodeClientFlags(0), encodeOption(Opt.EXPORT_NAME, Buffer.from('snap')), req(Cmd.READ, 0, 0, 512), disc(),
    ] },
    { name: 'options-all', frames: [
      encodeClientFlags(FIXED),
      encodeOption(Opt.LIST),
      encodeOption(Opt.LIST, Buffer.from('x')),
      encodeOption(Opt.STARTTLS),
      encodeOption(Opt.INFO, encodeInfoRequest('snap', [Info.BLOCK_SIZE])),
      encodeOption(Opt.INFO, encodeInfoRequest('nope', [])),
      encodeOption(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('disk', [])),
      encodeOption(Opt.STRUCTURED_REPLY),
      encodeOption(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('disk', ['base:'])),
      encodeOption(Opt.SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation', 'x:y'])),
      encodeOption(Opt.EXTENDED_HEADERS),
      encodeOption(42, fill(100, 5)),
      encodeOption(Opt.ABORT),
    ] },
    { name: 'errors-transmission', frames: [
      encodeClientFlags(FIXED), go(),
      req(Cmd.READ, 0, FUZZ_DISK_SIZE, 1),
      req(Cmd.WRITE, 0, FUZZ_DISK_SIZE - 10, 100, fill(100, 6)),
      req(Cmd.READ, 0, 0, 0),
      req(0x55, 0, 0, 0),
      req(Cmd.READ, 0x8000, 0, 512),
      req(Cmd.FLUSH, 0, 0, 512),
      req(Cmd.BLOCK_STATUS, 0, 0, 512),
      req(Cmd.READ, 0, 0, 512),
      disc(),
    ] },
    { name: 'read-only-writes', frames: [
      encodeClientFlags(FIXED), go('snap'),
      req(Cmd.WRITE, 0, 0, 1000, fill(1000, 7)), req(Cmd.TRIM, 0, 0, 4096), req(Cmd.WRITE_ZEROES, 0, 0, 4096),
      req(Cmd.READ, 0, 0, 1000), disc(),
    ] },
    { name: 'bad-request-magic', frames: [
      encodeClientFlags(FIXED), go(), req(Cmd.READ, 0, 0, 512),
      (() => { const b = req(Cmd.READ, 0, 0, 512); b.writeUInt32BE(0x25609514, 0); return b; })(),
      req(Cmd.READ, 0, 0, 512),
    ] },
    { name: 'bad-option-magic', frames: [
      encodeClientFlags(FIXED), encodeOption(Opt.LIST),
      (() => { const b = encodeOption(Opt.LIST); b.writeUInt8(0, 0); return b; })(),
    ] },
    { name: 'too-many-options', frames: [encodeClientFlags(FIXED), ...Array.from({ length: 50 }, () => encodeOption(Opt.LIST))] },
    { name: 'truncated-mid-write', frames: [
      encodeClientFlags(FIXED), go(), req(Cmd.WRITE, 0, 0, 8192, fill(8192, 8)).subarray(0, 28 + 3000),
    ] },
    { name: 'pipelined-no-disc', frames: [
      encodeClientFlags(FIXED), encodeOption(Opt.STRUCTURED_REPLY), go(),
      ...Array.from({ length: 20 }, (_, i) => i % 2
        ? req(Cmd.WRITE, CmdFlag.FUA, i * 4096, 4096, fill(4096, i))
        : req(Cmd.READ, 0, i * 2048, 70 * 1024)),
    ] },
  ];
}

export function writeTranscripts(dir = TRANSCRIPT_DIR): string[] {
  mkdirSync(dir, { recursive: true });
  return scenarios().map((s) => {
    const path = join(dir, `${s.name}.bin`);
    writeFileSync(path, Buffer.concat(s.frames));
    return path;
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const p of writeTranscripts()) console.log(p);
}
