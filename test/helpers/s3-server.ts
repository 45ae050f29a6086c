import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

/** s3rver's access key and secret: it checks request signatures against these. */
export const S3RVER_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' } as const;

/** A local S3 server for a test, with one bucket. */
export interface TestS3Server {
  /** `http://127.0.0.1:PORT`. */
  readonly endpoint: string;
  readonly bucket: string;
  /** Multipart uploads started and neither completed nor aborted: `{ key, uploadId }`. */
  incompleteUploads(): Promise<Array<{ key: string; uploadId: string }>>;
  /** Object keys in the bucket (s3rver's own files left out). */
  objectKeys(): Promise<string[]>;
  /** Requests s3rver answered, as `METHOD path?query`, for assertions on what the server sent. */
  readonly requests: string[];
  stop(): Promise<void>;
}

/**
 * Starts s3rver (a dev dependency) on 127.0.0.1:0 with a fresh directory and the bucket `bucket`.
 * s3rver 3.7 implements neither ListMultipartUploads nor AbortMultipartUpload (it answers 501 and
 * 405). In front of it, this answers AbortMultipartUpload by removing the upload from s3rver's own
 * on-disk state (`<bucket>/._S3rver_uploads/<upload id>/`), and `incompleteUploads` lists that
 * state in place of ListMultipartUploads, so that an abort is real and checkable.
 */
export async function startS3Server(bucket = 'cairn-test'): Promise<TestS3Server> {
  const dir = await mkdtemp(join(tmpdir(), 'cairn-s3-'));
  const s3rver = new S3rver({ directory: dir, silent: true, configureBuckets: [{ name: bucket }] });
  await s3rver.configureBuckets();
  const uploadsDir = join(dir, bucket, '._S3rver_uploads');
  const handle = s3rver.callback();
  const requests: string[] = [];
  const incompleteUploads = async () => {
    const ids = await readdir(uploadsDir).catch(() => [] as string[]);
    return await Promise.all(
      ids.map(async (uploadId) => ({
        uploadId,
        key: await readFile(join(uploadsDir, uploadId, 'key'), 'utf8').catch(() => '?'),
      })),
    );
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    requests.push(`${req.method} ${url.pathname}${url.search}`);
    const uploadId = url.searchParams.get('uploadId');
    if (req.method === 'DELETE' && uploadId !== null && /^[0-9a-f]+$/.test(uploadId)) {
      void abortUpload(join(uploadsDir, uploadId), res);
      return;
    }
    handle(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    requests,
    incompleteUploads,
    objectKeys: async () => {
      const files = (await readdir(join(dir, bucket), { recursive: true })) as string[];
      return files
        .filter((f) => f.endsWith('._S3rver_object') && !f.includes('._S3rver_uploads'))
        .map((f) => f.replace(/\._S3rver_object$/, ''))
        .sort();
    },
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function abortUpload(uploadDir: string, res: ServerResponse): Promise<void> {
  if (!(await stat(uploadDir).catch(() => undefined))) {
    res.writeHead(404, { 'Content-Type': 'application/xml' });
    res.end('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchUpload</Code></Error>');
    return;
  }
  await rm(uploadDir, { recursive: true, force: true });
  res.writeHead(204);
  res.end();
}
