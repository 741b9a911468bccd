// Just enough XML for S3's answers (ListObjectsV2, errors, multipart): S3 documents are flat,
// element-only and never nest an element in one of the same name, so a tag search suffices.

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

export function xmlDecode(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (m, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return ENTITIES[e] ?? m;
  });
}

/** The decoded text of the first `<tag>…</tag>`, or undefined. */
export function xmlText(xml: string, tag: string): string | undefined {
  const open = xml.indexOf(`<${tag}>`);
  if (open < 0) return undefined;
  const start = open + tag.length + 2;
  const end = xml.indexOf(`</${tag}>`, start);
  if (end < 0) return undefined;
  return xmlDecode(xml.slice(start, end));
}

/** The raw inner text of every `<tag>…</tag>`, in order. */
export function xmlBlocks(xml: string, tag: string): string[] {
  const out: string[] = [];
  let at = 0;
  for (;;) {
    const open = xml.indexOf(`<${tag}>`, at);
    if (open < 0) return out;
    const start = open + tag.length + 2;
    const end = xml.indexOf(`</${tag}>`, start);
    if (end < 0) return out;
    out.push(xml.slice(start, end));
    at = end + tag.length + 3;
  }
}
