// The S3 client against a real Ceph RGW, with the AWS CLI as the independent reader and a fault
// proxy in between for retries.
import { randomBytes, createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3Client, type S3ClientOptions } from '../../src/backup/s3/client.ts';
import { BackupError } from '../../src/backup/errors.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { RGW_ACCESS_KEY, RGW_REGION, RGW_SECRET_KEY, startRgw, type Rgw } from '../helpers/rgw.ts';

const BUCKET = 's3-client-test';
let rgw: Rgw;
let proxy: FaultProxy;

function client(endpoint: string, opts: S3ClientOptions = {}, secret = RGW_SECRET_KEY): S3Client {
  return new S3Client({ endpoint: new URL(endpoint), region: RGW_REGION, credentials: { accessKeyId: RGW_ACCESS_KEY, secretAccessKey: secret } }, opts);
}

beforeAll(async () => {
  rgw = await startRgw();
  await rgw.makeBucket(BUCKET);
  proxy = await startFaultProxy(rgw.endpoint);
}, 120_000);
afterAll(async () => {
  await proxy?.close();
  await rgw?.stop();
});

describe('S3 client against RGW', () => {
  it('PUT, GET, HEAD, DELETE round trip, and the AWS CLI agrees on the bytes', async () => {
    const c = client(rgw.endpoint);
    const data = randomBytes(300_000);
    await c.put(BUCKET, 'dir/a b+c', data);
    expect((await c.get(BUCKET, 'dir/a b+c'))!.equals(data)).toBe(true);
    expect(await c.head(BUCKET, 'dir/a b+c')).toEqual({ size: data.length });
    const f = join(rgw.dir, 'cli-copy');
    await rgw.aws(['s3', 'cp', '--only-show-errors', `s3://${BUCKET}/dir/a b+c`, f]);
    expect(readFileSync(f).equals(data)).toBe(true);
    writeFileSync(f, 'from the cli');
    await rgw.aws(['s3', 'cp', '--only-show-errors', f, `s3://${BUCKET}/cli/obj`]);
    expect((await c.get(BUCKET, 'cli/obj'))!.toString()).toBe('from the cli');
    await c.delete(BUCKET, 'dir/a b+c');
    expect(await c.get(BUCKET, 'dir/a b+c')).toBeNull();
    expect(await c.head(BUCKET, 'dir/a b+c')).toBeNull();
    c.close();
  });

  it('a body that fits is received into the given buffer; a known payload hash is signed as given', async () => {
    const c = client(rgw.endpoint);
    const data = randomBytes(200_000);
    await c.put(BUCKET, 'into/a', data, undefined, createHash('sha256').update(data).digest('hex'));
    const into = Buffer.alloc(256 * 1024);
    const got = (await c.get(BUCKET, 'into/a', undefined, into))!;
    expect(got.equals(data)).toBe(true);
    expect(got.buffer === into.buffer).toBe(true);
    expect(into.subarray(0, data.length).equals(data)).toBe(true);
    // Larger than the buffer: a Buffer of its own, the given one untouched past nothing.
    const small = Buffer.alloc(1000);
    const whole = (await c.get(BUCKET, 'into/a', undefined, small))!;
    expect(whole.equals(data)).toBe(true);
    expect(whole.buffer === small.buffer).toBe(false);
    expect(small.equals(Buffer.alloc(1000))).toBe(true);
    // The hash given is the one signed: RGW refuses a body that does not match it.
    const other = randomBytes(1000);
    const e = await c.put(BUCKET, 'into/b', other, undefined, createHash('sha256').update(data).digest('hex')).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BackupError);
    expect(await c.get(BUCKET, 'into/b')).toBeNull();
    c.close();
  });

  it('a truncated body received into a buffer is retried, and the answer is whole', async () => {
    const retries: string[] = [];
    const c = client(proxy.endpoint, { idleTimeoutMs: 1000, attempts: 4, onRetry: (_w, _a, cause) => retries.push(cause) });
    const data = randomBytes(150_000);
    await c.put(BUCKET, 'into/t', data);
    proxy.inject('truncate', 1, (m) => m === 'GET');
    const into = Buffer.alloc(150_000);
    const got = (await c.get(BUCKET, 'into/t', undefined, into))!;
    expect(got.equals(data)).toBe(true);
    expect(got.buffer === into.buffer).toBe(true);
    expect(retries.join('|')).toMatch(/short body|aborted/);
    c.close();
  });

  it('lists across pages with continuation tokens', async () => {
    const c = client(proxy.endpoint, { listPageSize: 7 });
    for (let i = 0; i < 23; i++) await c.put(BUCKET, `list/${String(i).padStart(3, '0')}`, Buffer.from([i]));
    const before = proxy.seen.length;
    const keys: string[] = [];
    for await (const o of c.list(BUCKET, 'list/')) keys.push(o.key);
    expect(keys).toEqual(Array.from({ length: 23 }, (_, i) => `list/${String(i).padStart(3, '0')}`));
    const pages = proxy.seen.slice(before);
    expect(pages.length).toBe(4);
    expect(pages.filter((p) => p.includes('continuation-token=')).length).toBe(3);
    c.close();
  });

  it('uploads a large object in parts (the AWS CLI sees a multipart ETag and the same bytes)', async () => {
    const c = client(rgw.endpoint, { multipartThreshold: 5 * 1024 * 1024, partBytes: 5 * 1024 * 1024 });
    const data = randomBytes(12 * 1024 * 1024 + 5);
    await c.put(BUCKET, 'big/one', data);
    const head = JSON.parse(await rgw.aws(['s3api', 'head-object', '--bucket', BUCKET, '--key', 'big/one'])) as { ETag: string; ContentLength: number };
    expect(head.ETag).toMatch(/-3"$/);
    expect(head.ContentLength).toBe(data.length);
    const got = await c.get(BUCKET, 'big/one');
    expect(createHash('sha256').update(got!).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    c.close();
  });

  it('retries 500, 503 SlowDown, resets, stalls and truncated bodies, then succeeds', async () => {
    const retries: string[] = [];
    const c = client(proxy.endpoint, { idleTimeoutMs: 1000, attempts: 8, onRetry: (_w, _a, cause) => retries.push(cause) });
    const data = randomBytes(100_000);
    proxy.inject('status500', 1, (m) => m === 'PUT');
    proxy.inject('slowdown', 1, (m) => m === 'PUT');
    proxy.inject('reset', 1, (m) => m === 'PUT');
    await c.put(BUCKET, 'faulty/obj', data);
    proxy.inject('truncate', 1, (m) => m === 'GET');
    proxy.inject('stall', 1, (m) => m === 'GET');
    proxy.inject('reset', 1, (m) => m === 'GET');
    expect((await c.get(BUCKET, 'faulty/obj'))!.equals(data)).toBe(true);
    expect(retries.length).toBe(6);
    expect(retries.join('|')).toMatch(/500 InternalError/);
    expect(retries.join('|')).toMatch(/503 SlowDown/);
    expect(retries.join('|')).toMatch(/short body|aborted/);
    expect(retries.join('|')).toMatch(/no response for 1000 ms/);
    c.close();
  });

  it('gives up after its attempts with TARGET_UNAVAILABLE naming the endpoint', async () => {
    const c = client(proxy.endpoint, { attempts: 3 });
    proxy.inject('status500', 3, (m) => m === 'GET');
    const e = await c.get(BUCKET, 'faulty/obj').catch((x: unknown) => x) as BackupError;
    expect(e).toBeInstanceOf(BackupError);
    expect(e.code).toBe('TARGET_UNAVAILABLE');
    expect(e.message).toContain(proxy.endpoint);
    expect(e.message).toMatch(/failed 3 times/);
    c.close();
  });

  it('wrong credentials: TARGET_DENIED naming bucket and endpoint, never the secret', async () => {
    const secret = 'wrong-secret-must-not-leak';
    const c = client(rgw.endpoint, {}, secret);
    const e = await c.checkBucket(BUCKET).catch((x: unknown) => x) as BackupError;
    expect(e.code).toBe('TARGET_DENIED');
    expect(e.message).toContain(`'${BUCKET}'`);
    expect(e.message).toContain(rgw.endpoint);
    expect(e.message).not.toContain(secret);
    expect(e.message).not.toContain(RGW_SECRET_KEY);
    c.close();
  });

  it('a missing bucket: TARGET_NOT_FOUND naming it', async () => {
    const c = client(rgw.endpoint);
    const e = await c.checkBucket('no-such-bucket').catch((x: unknown) => x) as BackupError;
    expect(e.code).toBe('TARGET_NOT_FOUND');
    expect(e.message).toContain("bucket 'no-such-bucket'");
    c.close();
  });
});
