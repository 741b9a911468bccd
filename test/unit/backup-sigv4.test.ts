// SigV4 against the worked examples of the AWS S3 documentation ("Signature Calculations for the
// Authorization Header: Transferring Payload in a Single Chunk"): the same inputs must give the
// same signatures, byte for byte.
import { describe, expect, it } from 'vitest';
import { authorization, canonicalQuery, encodePath, sha256Hex, EMPTY_SHA256 } from '../../src/backup/s3/sigv4.ts';
import { parseIni, resolveS3Config } from '../../src/backup/s3/config.ts';

const credentials = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
const base = { amzDate: '20130524T000000Z', region: 'us-east-1', service: 's3', credentials };
const host = 'examplebucket.s3.amazonaws.com';

describe('SigV4 (AWS documentation examples)', () => {
  it('GET object with a Range header', () => {
    const a = authorization({
      ...base, method: 'GET', path: '/test.txt', query: {}, payloadSha256: EMPTY_SHA256,
      headers: { host, range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': base.amzDate },
    });
    expect(a).toBe('AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41');
  });

  it('PUT object: the real payload hash and an encoded key', () => {
    const body = Buffer.from('Welcome to Amazon S3.');
    const hash = sha256Hex(body);
    expect(hash).toBe('44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072');
    const a = authorization({
      ...base, method: 'PUT', path: encodePath('/test$file.text'), query: {}, payloadSha256: hash,
      headers: { host, date: 'Fri, 24 May 2013 00:00:00 GMT', 'x-amz-date': base.amzDate, 'x-amz-storage-class': 'REDUCED_REDUNDANCY', 'x-amz-content-sha256': hash },
    });
    expect(a).toMatch(/SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd$/);
  });

  it('GET bucket lifecycle (a bare sub-resource)', () => {
    const a = authorization({
      ...base, method: 'GET', path: '/', query: { lifecycle: '' }, payloadSha256: EMPTY_SHA256,
      headers: { host, 'x-amz-date': base.amzDate, 'x-amz-content-sha256': EMPTY_SHA256 },
    });
    expect(a).toMatch(/Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543$/);
  });

  it('GET bucket (list objects) with sorted query parameters', () => {
    const a = authorization({
      ...base, method: 'GET', path: '/', query: { prefix: 'J', 'max-keys': '2' }, payloadSha256: EMPTY_SHA256,
      headers: { host, 'x-amz-date': base.amzDate, 'x-amz-content-sha256': EMPTY_SHA256 },
    });
    expect(a).toMatch(/Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7$/);
  });

  it('encodes query values the RFC 3986 way', () => {
    expect(canonicalQuery({ 'continuation-token': 'a+b/c=', prefix: 'x y' })).toBe('continuation-token=a%2Bb%2Fc%3D&prefix=x%20y');
  });
});

describe('S3 configuration the AWS CLI way', () => {
  it('takes the environment first, then the profile files', () => {
    const env = {
      HOME: '/nonexistent', AWS_ENDPOINT_URL: 'http://127.0.0.1:9', AWS_REGION: 'eu-west-3',
      AWS_ACCESS_KEY_ID: 'AK', AWS_SECRET_ACCESS_KEY: 'SK',
    };
    const c = resolveS3Config(env);
    expect(c.endpoint.origin).toBe('http://127.0.0.1:9');
    expect(c.region).toBe('eu-west-3');
    expect(c.credentials).toEqual({ accessKeyId: 'AK', secretAccessKey: 'SK' });
  });

  it('refuses to run without credentials, naming the variables and the profile (not a secret)', () => {
    expect(() => resolveS3Config({ HOME: '/nonexistent', AWS_PROFILE: 'backup' })).toThrow(/AWS_ACCESS_KEY_ID.*profile 'backup'/);
  });

  it('reads INI sections and keys', () => {
    const ini = parseIni('# c\n[default]\naws_access_key_id = A\n[profile x]\nregion=r\n');
    expect(ini.get('default')?.get('aws_access_key_id')).toBe('A');
    expect(ini.get('profile x')?.get('region')).toBe('r');
  });
});
