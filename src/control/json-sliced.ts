// A control reply's JSON text built in slices that yield the event loop (util/slice.ts): a
// snapshot.diff page of DIFF_PAGE_MAX extents is ~2.5 MB of JSON, ~16 ms of JSON.stringify in one
// turn, during which no NBD request is served. Long arrays are encoded JSON_SLICE_ITEMS elements
// at a time; everything else exactly as JSON.stringify does (the text is the same, byte for byte).
import { Slicer } from '../util/slice.ts';

/** Array elements encoded between two looks at the clock. */
export const JSON_SLICE_ITEMS = 1024;

/** JSON.stringify(value), in slices; `slicer` is for tests. */
export async function stringifySliced(value: unknown, slicer: Slicer = new Slicer()): Promise<string> {
  const parts: string[] = [];
  await encode(value, parts, slicer);
  return parts.join('');
}

/** An object JSON.stringify would walk key by key (no toJSON, the plain prototype). */
function isPlain(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return (proto === Object.prototype || proto === null) && typeof (v as { toJSON?: unknown }).toJSON !== 'function';
}

async function encode(v: unknown, parts: string[], slicer: Slicer): Promise<void> {
  if (Array.isArray(v) && v.length > JSON_SLICE_ITEMS) {
    parts.push('[');
    for (let i = 0; i < v.length; i += JSON_SLICE_ITEMS) {
      if (slicer.due()) await slicer.yield();
      const text = JSON.stringify(v.slice(i, i + JSON_SLICE_ITEMS)); // "[a,b,...]", never empty
      parts.push(i === 0 ? text.slice(1, -1) : `,${text.slice(1, -1)}`);
    }
    parts.push(']');
    return;
  }
  if (!isPlain(v)) {
    // Small arrays, strings, numbers, objects with toJSON: in one go. Undefined at the top
    // (JSON.stringify answers undefined) does not occur: a reply is an object.
    parts.push(JSON.stringify(v) ?? 'null');
    return;
  }
  parts.push('{');
  let first = true;
  for (const key of Object.keys(v)) {
    const x = v[key];
    // JSON.stringify leaves these properties out.
    if (x === undefined || typeof x === 'function' || typeof x === 'symbol') continue;
    parts.push(`${first ? '' : ','}${JSON.stringify(key)}:`);
    first = false;
    await encode(x, parts, slicer);
  }
  parts.push('}');
}
