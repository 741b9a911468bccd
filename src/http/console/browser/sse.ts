// A Server-Sent Events parser (the text/event-stream format): pure, fed any split of the stream.
// The console reads its event stream with fetch() rather than EventSource, because EventSource
// cannot send the Authorization header and the console uses no cookies.

export interface SseEvent {
  event: string;
  data: string;
}

export class SseParser {
  private partial = '';
  private event = '';
  private data: string[] = [];

  /** Events completed by `text`, in order. */
  push(text: string): SseEvent[] {
    const out: SseEvent[] = [];
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line === '') {
        if (this.data.length > 0) out.push({ event: this.event || 'message', data: this.data.join('\n') });
        this.event = '';
        this.data = [];
        continue;
      }
      if (line.startsWith(':')) continue; // comment (keep-alive)
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.event = value;
      else if (field === 'data') this.data.push(value);
    }
    return out;
  }
}
