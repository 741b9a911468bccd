// Micro benchmark of the NBD codec (src/protocol): decoding request streams split into chunks of
// various sizes (as TCP delivers them), and encoding reply headers. Plain tsx, no framework:
//   node --import tsx bench/micro/codec.ts
// Numbers are per operation on this machine; compare before/after a change in one sitting.
import { InboundDecoder, type InboundHandler } from '../../src/protocol/decoder.ts';
import { Cmd } from '../../src/protocol/constants.ts';
import { encodeChunkHeader, encodeOffsetDataHeader, encodeRequestHeader, encodeSimpleReply, type RequestHeader } from '../../src/protocol/transmission.ts';

const REQUESTS = 200_000;
const WRITE_PAYLOAD = 4096;
const ROUNDS = 5;

function stream(kind: 'read' | 'write'): Buffer {
  const parts: Buffer[] = [];
  const cookie = Buffer.alloc(8);
  const payload = Buffer.alloc(WRITE_PAYLOAD, 0xab);
  for (let i = 0; i < REQUESTS; i++) {
    cookie.writeUInt32BE(i, 4);
    const h: RequestHeader = { flags: 0, type: kind === 'read' ? Cmd.READ : Cmd.WRITE, cookie, offset: (i * 4096) % 2 ** 30, length: 4096 };
    parts.push(encodeRequestHeader(h));
    if (kind === 'write') parts.push(payload);
  }
  return Buffer.concat(parts);
}

function decodeAll(input: Buffer, chunk: number): number {
  let n = 0;
  const handler: InboundHandler = {
    onClientFlags() {},
    onOption() {},
    onRequest() { n++; },
    onProtocolError(e) { throw e; },
  };
  const d = new InboundDecoder(handler);
  d.startTransmission();
  for (let at = 0; at < input.length; at += chunk) d.push(input.subarray(at, at + chunk));
  return n;
}

function time(label: string, ops: number, fn: () => void): void {
  const ns: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    ns.push(Number(process.hrtime.bigint() - t0));
  }
  ns.sort((a, b) => a - b);
  const med = ns[ROUNDS >> 1]!;
  process.stdout.write(`${label.padEnd(44)} ${(med / ops).toFixed(1).padStart(8)} ns/op ${(ops / (med / 1e9) / 1e6).toFixed(2).padStart(7)} M ops/s\n`);
}

const reads = stream('read');
const writes = stream('write');
for (const chunk of [28, 1460, 16384, 65536]) {
  time(`decode READ requests, ${chunk}-byte chunks`, REQUESTS, () => { if (decodeAll(reads, chunk) !== REQUESTS) throw new Error('lost requests'); });
}
for (const chunk of [1460, 16384, 65536]) {
  time(`decode 4 KiB WRITE requests, ${chunk}-byte chunks`, REQUESTS, () => { if (decodeAll(writes, chunk) !== REQUESTS) throw new Error('lost requests'); });
}
const cookie = Buffer.alloc(8, 1);
time('encodeSimpleReply', REQUESTS, () => { for (let i = 0; i < REQUESTS; i++) encodeSimpleReply(0, cookie); });
time('encodeOffsetDataHeader', REQUESTS, () => { for (let i = 0; i < REQUESTS; i++) encodeOffsetDataHeader(1, cookie, i * 4096, 4096); });
time('encodeChunkHeader', REQUESTS, () => { for (let i = 0; i < REQUESTS; i++) encodeChunkHeader(1, 1, cookie, 4096); });
