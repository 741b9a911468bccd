// A target's `?upload-limit=RATE`: parsed strictly, and puts paced so that no window of time
// sends more than the rate allows (plus one burst), whatever the sizes and timing of the puts.
import { describe, expect, it } from 'vitest';
import { parseTargetUrl, MIN_UPLOAD_LIMIT, type ObjectStore } from '../../src/backup/target.ts';
import { limitUploads, UPLOAD_BURST_MS, UPLOAD_UNPACED_MAX, UploadPacer } from '../../src/backup/upload-limit.ts';
import { withSeed } from '../helpers/prng.ts';

const MiB = 1024 * 1024;

describe('upload-limit', () => {
  it('is parsed from the target URL, beside encrypt', () => {
    expect(parseTargetUrl('file:///srv/b?upload-limit=20M').uploadLimit).toBe(20 * MiB);
    const both = parseTargetUrl('s3://bucket/p?encrypt=/k&upload-limit=512K');
    expect([both.uploadLimit, both.keyFile]).toEqual([512 * 1024, '/k']);
    expect(parseTargetUrl('file:///srv/b').uploadLimit).toBeNull();
  });

  it('refuses a rate that is not one, or too slow to send a block', () => {
    for (const bad of ['fast', '', '-1M', `${MIN_UPLOAD_LIMIT - 1}`, '1K']) {
      expect(() => parseTargetUrl(`file:///srv/b?upload-limit=${bad}`)).toThrow(/upload-limit=: .* is not a rate of at least 64K/);
    }
    expect(() => parseTargetUrl('file:///srv/b?uplaod-limit=1M')).toThrow(/option 'uplaod-limit' is unknown \(known: encrypt, upload-limit\)/);
  });

  it('never lets a window send more than the rate plus one burst (seeded puts)', async () => {
    await withSeed('pacer', (rng) => {
      const rate = 1000 * rng.int(1, 100); // bytes per second
      const pacer = new UploadPacer(rate);
      const sends: { at: number; bytes: number }[] = [];
      let now = 0;
      for (let i = 0; i < 400; i++) {
        now += rng.int(0, 2) === 0 ? rng.int(0, 2000) : rng.int(0, 20);
        const bytes = rng.int(1, rate);
        sends.push({ at: now + pacer.reserve(bytes, now), bytes });
      }
      // Sent in [a, b]: the bytes of every put that starts inside it.
      for (const a of sends) {
        for (const b of sends) {
          if (b.at < a.at) continue;
          const inside = sends.filter((s) => s.at >= a.at && s.at <= b.at).reduce((n, s) => n + s.bytes, 0);
          const allowed = (rate * (b.at - a.at + UPLOAD_BURST_MS)) / 1000 + rate; // + the last put, booked whole
          expect(inside).toBeLessThanOrEqual(allowed + 1e-6);
        }
      }
      // And it does send: a steady stream goes at the rate, not slower.
      const last = sends[sends.length - 1]!;
      expect(last.at).toBeLessThanOrEqual(now + (1000 * sends.reduce((n, s) => n + s.bytes, 0)) / rate);
    });
  });

  it('waits before a put, passes everything else through, and a cancelled put never reaches the store', async () => {
    const puts: string[] = [];
    const inner: ObjectStore = {
      display: 'mem://', put: async (k) => { puts.push(k); }, get: async () => null, exists: async () => true,
      delete: async () => {}, list: async function* () {}, check: async () => {}, close: () => {},
    };
    expect(limitUploads(inner, null)).toBe(inner);
    const limited = limitUploads(inner, new UploadPacer(MIN_UPLOAD_LIMIT));
    expect(limited.display).toBe('mem://');
    expect(await limited.exists('x')).toBe(true);
    // The burst's worth goes at once; the next put books two seconds of the rate.
    const burst = Buffer.alloc((MIN_UPLOAD_LIMIT * UPLOAD_BURST_MS) / 1000);
    await limited.put('a', burst);
    expect(puts).toEqual(['a']);
    const ac = new AbortController();
    const t0 = performance.now();
    const p = limited.put('b', Buffer.alloc(2 * MIN_UPLOAD_LIMIT), ac.signal); // past the unpaced size
    setTimeout(() => ac.abort(), 100);
    await expect(p).rejects.toThrow(/abort/i);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90);
    expect(puts).toEqual(['a']);
  });

  it('sends small puts at once, however much is booked ahead of them; a cancelled put gives its booking back', async () => {
    const puts: string[] = [];
    const inner: ObjectStore = {
      display: 'mem://', put: async (k) => { puts.push(k); }, get: async () => null, exists: async () => true,
      delete: async () => {}, list: async function* () {}, check: async () => {}, close: () => {},
    };
    const refunds: number[] = [];
    const pacer = new (class extends UploadPacer { override refund(bytes: number): void { refunds.push(bytes); super.refund(bytes); } })(MIN_UPLOAD_LIMIT);
    const limited = limitUploads(inner, pacer);
    const ac = new AbortController();
    const big = limited.put('big', Buffer.alloc(4 * MIN_UPLOAD_LIMIT), ac.signal); // four seconds at the rate
    // A marker's heartbeat, behind the big put's booking, still goes first.
    await limited.put('marker', Buffer.alloc(UPLOAD_UNPACED_MAX));
    expect(puts).toEqual(['marker']);
    ac.abort();
    await expect(big).rejects.toThrow(/abort/i);
    expect(puts).toEqual(['marker']);
    expect(refunds).toEqual([4 * MIN_UPLOAD_LIMIT]); // its booking given back
  });

  it('a refunded booking leaves the next put waiting as if it had never been booked', () => {
    const rate = 1000; // bytes per second: 1 byte per ms
    const a = new UploadPacer(rate);
    const b = new UploadPacer(rate);
    a.reserve(300, 0);
    b.reserve(300, 0);
    a.reserve(5000, 10); // cancelled...
    a.refund(5000); // ...and given back
    expect(a.reserve(700, 20)).toBe(b.reserve(700, 20));
    expect(b.reserve(700, 20)).toBeGreaterThan(0);
  });
});
