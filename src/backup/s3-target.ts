// A target in an S3 bucket under a key prefix, through our own S3 client.
import { S3Client, type S3ClientOptions } from './s3/client.ts';
import { resolveS3Config } from './s3/config.ts';
import type { ObjectEntry, ObjectStore } from './target.ts';

export class S3Target implements ObjectStore {
  readonly display: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(bucket: string, prefix: string, opts: S3ClientOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    this.client = new S3Client(resolveS3Config(env), opts);
    this.bucket = bucket;
    this.prefix = prefix;
    this.display = `s3://${bucket}/${prefix} at ${this.client.endpointName}`;
  }

  check(): Promise<void> {
    return this.client.checkBucket(this.bucket);
  }

  put(key: string, data: Buffer, signal?: AbortSignal, sha256?: string): Promise<void> {
    return this.client.put(this.bucket, this.prefix + key, data, signal, sha256);
  }

  get(key: string, signal?: AbortSignal, into?: Buffer): Promise<Buffer | null> {
    return this.client.get(this.bucket, this.prefix + key, signal, into);
  }

  async exists(key: string, signal?: AbortSignal): Promise<boolean> {
    return (await this.client.head(this.bucket, this.prefix + key, signal)) !== null;
  }

  delete(key: string): Promise<void> {
    return this.client.delete(this.bucket, this.prefix + key);
  }

  async *list(prefix: string): AsyncIterable<ObjectEntry> {
    for await (const o of this.client.list(this.bucket, this.prefix + prefix)) {
      yield { ...o, key: o.key.slice(this.prefix.length) };
    }
  }

  close(): void {
    this.client.close();
  }
}
