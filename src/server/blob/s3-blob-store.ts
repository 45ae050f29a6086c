import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { PassThrough, type Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { CairnError } from '../../lib/cairn-error.ts';
import type { BlobRead, BlobStore, BlobWriter } from './blob-store.ts';
import type { BlobStoreConfig } from './blob-store-config.ts';
import { checkBlobKey } from './check-blob-key.ts';

type S3Config = Extract<BlobStoreConfig, { kind: 's3' }>;

/**
 * Bytes per part of a multipart upload: S3 allows 10,000 parts, so 8 MiB parts hold NARs up to
 * 80 GiB (above the 64 GiB upload limit), and two parts in flight keep an upload to some 24 MiB.
 */
const PART_SIZE = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 2;

/**
 * A {@link BlobStore} in an S3-compatible bucket (AWS S3, R2, MinIO, Garage, Ceph). A writer
 * streams into a multipart upload that `commit` completes and checks; `abort`, and any failure,
 * aborts it, so no incomplete upload is left behind (a bucket lifecycle rule is the backstop
 * when the bucket itself is unreachable at that moment).
 */
export class S3BlobStore implements BlobStore {
  readonly #client: S3Client;
  readonly #config: S3Config;
  readonly downloadUrl: ((key: string) => Promise<string>) | undefined;

  constructor(config: S3Config) {
    this.#config = config;
    this.#client = new S3Client({
      region: config.region,
      forcePathStyle: config.pathStyle,
      ...(config.endpoint === undefined ? {} : { endpoint: config.endpoint }),
      // A copy: the SDK marks the object it is given, and the config is frozen.
      ...(config.credentials === undefined ? {} : { credentials: { ...config.credentials } }),
      // Newer SDKs add CRC32 checksum headers that several S3-compatible servers reject.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        // An unreachable endpoint fails the start within seconds rather than hanging it.
        connectionTimeout: 5000,
        // NAR downloads stream through these sockets: allow more than the SDK's 50.
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 512 }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: 512 }),
      },
    });
    this.downloadUrl =
      config.downloads === 'redirect'
        ? (key) =>
            getSignedUrl(this.#client, new GetObjectCommand({ Bucket: config.bucket, Key: this.#key(key) }), {
              expiresIn: config.redirectTtlSeconds,
            })
        : undefined;
  }

  /**
   * Checks that the bucket exists and the credentials may use it.
   * @throws CairnError STORAGE_UNAVAILABLE saying why.
   */
  async init(): Promise<void> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.#config.bucket }));
    } catch (err) {
      throw this.#failure('use the bucket', err);
    }
  }

  #key(key: string): string {
    return `${this.#config.prefix}${checkBlobKey(key)}`;
  }

  /** Names where the bucket is and why it failed, in words an operator can act on. */
  #failure(action: string, err: unknown): CairnError {
    const e = err as {
      name?: string;
      code?: string;
      message?: string;
      $metadata?: { httpStatusCode?: number };
    };
    const status = e.$metadata?.httpStatusCode;
    // Only the start names the endpoint: a client that gets this error in a 503 need not learn it.
    const where =
      action === 'use the bucket'
        ? `s3://${this.#config.bucket} at ${this.#config.endpoint ?? `AWS ${this.#config.region}`}`
        : 'the S3 bucket';
    let why = e.message || e.name || String(err);
    if (status === 404 || e.name === 'NoSuchBucket') why = 'the bucket does not exist';
    else if (status === 403) why = 'access denied; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY';
    else if (status === 301) why = 'the bucket is in another region; set region=';
    else if (e.code !== undefined && /^E[A-Z]+/.test(e.code)) why = `cannot reach the endpoint (${e.code})`;
    return new CairnError('STORAGE_UNAVAILABLE', `Cannot ${action} ${where}: ${why}`, { cause: err });
  }

  async createWriter(key: string): Promise<BlobWriter> {
    const Key = this.#key(key);
    const body = new PassThrough({ highWaterMark: 1024 * 1024 });
    // `abort` destroys it with an error, which the upload reports; nothing else may listen.
    body.on('error', () => {});
    const upload = new Upload({
      client: this.#client,
      params: { Bucket: this.#config.bucket, Key, Body: body },
      partSize: PART_SIZE,
      queueSize: PARTS_IN_FLIGHT,
      leavePartsOnError: false,
    });
    // Settles once the upload completed, or failed and its multipart upload was aborted: the
    // uploaders only stop once `body` ends or fails, so this waits for the abort itself.
    const settled: Promise<Error | undefined> = upload.done().then(
      () => undefined,
      (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
    );
    let bytes = 0;
    let aborting: Promise<void> | undefined;
    const failed = async () => {
      const err = await settled;
      throw this.#failure(`upload ${Key} to`, err ?? new Error('the upload ended early'));
    };
    return {
      write: async (chunk) => {
        if (aborting || body.destroyed) throw new Error(`Cannot write ${Key}: the upload was aborted`);
        bytes += chunk.length;
        if (body.write(chunk)) return;
        await Promise.race([drained(body), failed()]);
      },
      commit: async () => {
        body.end();
        const err = await settled;
        if (err) throw this.#failure(`upload ${Key} to`, err);
        // Completed is not yet verified: the object must be there, with every byte written.
        const head = await this.#client.send(new HeadObjectCommand({ Bucket: this.#config.bucket, Key }));
        if (head.ContentLength !== bytes) {
          await this.delete(key).catch(() => {});
          throw new CairnError(
            'STORAGE_UNAVAILABLE',
            `Cannot upload ${Key} to the S3 bucket: it holds ${head.ContentLength} bytes after the upload, not ${bytes}`,
          );
        }
      },
      abort: () => {
        aborting ??= (async () => {
          body.destroy(new Error('the upload was aborted'));
          await settled;
        })();
        return aborting;
      },
    };
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    try {
      const head = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.#config.bucket, Key: this.#key(key) }),
      );
      return { size: head.ContentLength ?? 0 };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw this.#failure(`read ${key} from`, err);
    }
  }

  async read(key: string, range?: { start: number; end: number }): Promise<BlobRead | undefined> {
    try {
      const got = await this.#client.send(
        new GetObjectCommand({
          Bucket: this.#config.bucket,
          Key: this.#key(key),
          ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
        }),
      );
      return { size: got.ContentLength ?? 0, stream: got.Body as Readable };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw this.#failure(`read ${key} from`, err);
    }
  }

  async delete(key: string): Promise<void> {
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#config.bucket, Key: this.#key(key) }));
  }

  /** Closes the client's sockets. */
  destroy(): void {
    this.#client.destroy();
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
}

/** Resolves on 'drain'; rejects when the stream closes first, so a writer never waits forever. */
function drained(stream: PassThrough): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (err?: Error) => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onClose = () => settle(new Error('the upload was aborted'));
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}
