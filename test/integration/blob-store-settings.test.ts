import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Scratch, scratchDir } from '../helpers/binary-cache.ts';
import { S3RVER_CREDENTIALS, startS3Server, type TestS3Server } from '../helpers/s3-server.ts';
import { freePort } from '../helpers/server-process.ts';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

/** Runs the real `cairn server` with `args`; it is expected to exit by itself. */
function cairnServer(
  args: string[],
  env: Record<string, string>,
  dataDir: string,
): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', MAIN, 'server', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...args],
      { env: { PATH: process.env.PATH ?? '', HOME: dataDir, ...env }, timeout: 60_000 },
      (err, _stdout, stderr) => resolve({ code: err ? Number(err.code ?? 1) : 0, stderr }),
    );
  });
}

describe('cairn server --blob-store refuses bad settings at start', () => {
  let s3: TestS3Server;
  let scratch: Scratch;
  before(async () => {
    s3 = await startS3Server();
    scratch = await scratchDir();
  });
  after(async () => {
    await s3.stop();
    await scratch.cleanup();
  });

  const start = (url: string, env: Record<string, string> = { ...S3RVER_CREDENTIALS }) =>
    cairnServer(['--blob-store', url], env, scratch.dir);

  it('a malformed URL, an unknown parameter or a bad value exits 2 naming each problem', async () => {
    const bad = await start('s3//bucket');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /Cannot use --blob-store: expected s3:\/\/BUCKET/);
    const many = await start('s3://ok-bucket?endpoint=ftp://x&regoin=eu&downloads=fast&redirect-ttl=9y');
    assert.equal(many.code, 2);
    assert.match(many.stderr, /unknown parameter 'regoin'/);
    assert.match(many.stderr, /endpoint must be an http\(s\) URL without a path \(ftp:\/\/x\)/);
    assert.match(many.stderr, /downloads must be proxy or redirect \(fast\)/);
    assert.match(many.stderr, /redirect-ttl must be a duration from 1s to 7d/);
    const ttl = await start('s3://ok-bucket?redirect-ttl=5m');
    assert.match(ttl.stderr, /redirect-ttl applies only with downloads=redirect/);
  });

  it('credentials in the URL are refused without being echoed; half a key pair is refused', async () => {
    const res = await start('s3://AKIAEXAMPLE:hunter2secret@bucket?region=eu-west-1');
    assert.equal(res.code, 2);
    assert.match(res.stderr, /credentials do not belong in the URL; set AWS_ACCESS_KEY_ID/);
    assert.doesNotMatch(res.stderr, /hunter2secret|AKIAEXAMPLE/);
    const half = await start(`s3://${s3.bucket}?endpoint=${s3.endpoint}`, { AWS_ACCESS_KEY_ID: 'S3RVER' });
    assert.equal(half.code, 2);
    assert.match(half.stderr, /set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither/);
  });

  it('an unreachable endpoint exits 1 saying so', async () => {
    const port = await freePort();
    const res = await start(`s3://${s3.bucket}?endpoint=http://127.0.0.1:${port}&path-style=true`);
    assert.equal(res.code, 1);
    assert.match(
      res.stderr,
      new RegExp(
        `Cannot use the bucket s3://${s3.bucket} at http://127.0.0.1:${port}: cannot reach the endpoint \\(ECONNREFUSED\\)`,
      ),
    );
  });

  it('a missing bucket (from CAIRN_BLOB_STORE) exits 1 saying so', async () => {
    const res = await cairnServer(
      [],
      {
        ...S3RVER_CREDENTIALS,
        CAIRN_BLOB_STORE: `s3://no-such-bucket?endpoint=${s3.endpoint}&path-style=true`,
      },
      scratch.dir,
    );
    assert.equal(res.code, 1);
    assert.match(
      res.stderr,
      /Cannot use the bucket s3:\/\/no-such-bucket at http:\/\/127\.0\.0\.1:\d+: the bucket does not exist/,
    );
  });
  // Wrong credentials are not tested here: s3rver answers HeadBucket without checking the signature.
});
