import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  bearer,
  createTestCache,
  narinfoText,
  narOfFile,
  nixSha256,
  otherMachineNixEnv,
  rawRequest,
  type Scratch,
  scratchDir,
  substituterArgs,
  syntheticPath,
  type TestCache,
  writeNetrc,
} from '../helpers/binary-cache.ts';
import { buildPackages, deleteFromStore, RUN_TAG, run } from '../helpers/nix.ts';
import { S3RVER_CREDENTIALS, startS3Server, type TestS3Server } from '../helpers/s3-server.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

/** A closure of three paths, one of them 20 MB of random bytes: more than two 8 MiB parts. */
function closure(prefix: string) {
  return [
    { name: `${prefix}-base` },
    {
      name: `${prefix}-big`,
      deps: [`${prefix}-base`],
      script: `mkdir $out; head -c 20000000 /dev/urandom > $out/big; echo $dep_${prefix}_base > $out/deps`,
    },
    { name: `${prefix}-app`, deps: [`${prefix}-big`, `${prefix}-base`] },
  ];
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > end) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('binary cache on S3 (s3rver), pushed and substituted with the real Nix', () => {
  let s3: TestS3Server;
  let scratch: Scratch;
  const built = new Map<string, string>();
  const servers: TestServer[] = [];

  /** A server whose blobs live in the bucket under `prefix`, with a cache and netrc files. */
  async function s3Server(prefix: string, params: string, endpoint = s3.endpoint) {
    const server = await startTestServer({
      blobStore: `s3://${s3.bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&path-style=true&${params}`,
      env: { ...S3RVER_CREDENTIALS },
    });
    servers.push(server);
    const cache = await createTestCache(server, 'main');
    const push = await writeNetrc(scratch.dir, cache.pushToken, `${prefix}-push`);
    const pull = await writeNetrc(scratch.dir, cache.pullToken, `${prefix}-pull`);
    return { server, cache, push, pull };
  }

  before(async () => {
    s3 = await startS3Server();
    scratch = await scratchDir();
    const packages = await buildPackages([...closure('s3proxy'), ...closure('s3redirect')]);
    for (const [k, v] of packages) built.set(k, v);
  });
  after(async () => {
    for (const server of servers) await server.stop();
    await s3.stop();
    await scratch.cleanup();
  });

  const paths = (prefix: string) => closure(prefix).map((p) => built.get(p.name)!);

  async function pushClosure(cache: TestCache, netrc: string, prefix: string): Promise<void> {
    const producer = await scratchDir('cairn-xdg-');
    try {
      await run(
        'nix',
        [
          'copy',
          '--to',
          `${cache.url}?compression=zstd`,
          built.get(`${prefix}-app`)!,
          '--option',
          'netrc-file',
          netrc,
        ],
        {
          env: otherMachineNixEnv(producer.dir),
        },
      );
    } finally {
      await producer.cleanup();
    }
  }

  async function substituteBack(cache: TestCache, netrc: string, prefix: string): Promise<void> {
    await deleteFromStore(paths(prefix));
    const xdg = await scratchDir('cairn-xdg-');
    try {
      await run('nix-store', ['--realise', built.get(`${prefix}-app`)!, ...substituterArgs(cache, netrc)], {
        env: otherMachineNixEnv(xdg.dir),
      });
    } finally {
      await xdg.cleanup();
    }
    const verify = await run('nix-store', ['--verify-path', ...paths(prefix)]);
    assert.equal(verify, '');
    assert.equal(await readFile(join(built.get(`${prefix}-app`)!, 'tag'), 'utf8'), `${RUN_TAG}\n`);
  }

  /** The NAR file the narinfo of `storePath` names, such as `nar/<hash>.nar.zst`. */
  async function narUrl(cache: TestCache, storePath: string): Promise<string> {
    const res = await rawRequest(`${cache.url}/${storePath.slice(11, 43)}.narinfo`, {
      headers: bearer(cache.pullToken),
    });
    assert.equal(res.status, 200, res.body);
    return /^URL: (\S+)$/m.exec(res.body)![1]!;
  }

  it('proxy mode: nix copy --to stores the NARs in the bucket by multipart upload, Nix substitutes them back, and a Range request gets its bytes', async () => {
    const { cache, push, pull } = await s3Server('proxy', 'downloads=proxy');
    await pushClosure(cache, push, 's3proxy');
    const keys = await s3.objectKeys();
    const big = await narUrl(cache, built.get('s3proxy-big')!);
    assert.ok(keys.includes(`proxy/caches/1/${big}`), `${big} not in the bucket: ${keys.join(' ')}`);
    assert.ok(
      s3.requests.some((r) => r.startsWith('POST /cairn-test/proxy/caches/1/nar/') && r.includes('uploads')),
      'no multipart upload was started',
    );
    assert.deepEqual(await s3.incompleteUploads(), []);

    const whole = await rawRequest(`${cache.url}/${big}`, { headers: bearer(cache.pullToken) });
    assert.equal(whole.status, 200);
    assert.ok(whole.bytes.length > 16 * 1024 * 1024);
    const part = await rawRequest(`${cache.url}/${big}`, {
      headers: { ...bearer(cache.pullToken), Range: 'bytes=9000000-9000099' },
    });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], `bytes 9000000-9000099/${whole.bytes.length}`);
    assert.deepEqual(part.bytes, whole.bytes.subarray(9000000, 9000100));

    // Build logs and the other opaque files go to the bucket too.
    const log = await rawRequest(`${cache.url}/log/abc-s3.drv`, {
      method: 'PUT',
      headers: bearer(cache.pushToken),
      body: 'build log\n',
    });
    assert.equal(log.status, 201);
    assert.ok((await s3.objectKeys()).includes('proxy/caches/1/log/abc-s3.drv'));
    const back = await rawRequest(`${cache.url}/log/abc-s3.drv`, { headers: bearer(cache.pullToken) });
    assert.equal(back.body, 'build log\n');

    await substituteBack(cache, pull, 's3proxy');
  });

  it('redirect mode: a NAR GET is a 302 to a presigned URL (after the token was checked), and Nix substitutes through it', async () => {
    // The bucket under another host name than the server's 127.0.0.1, as in any real setup: Nix
    // picks netrc entries by host alone, and would send the cache token along to the bucket,
    // which refuses a request with two kinds of authentication.
    const bucketEndpoint = s3.endpoint.replace('127.0.0.1', 'localhost');
    const { cache, push, pull } = await s3Server(
      'redirect',
      'downloads=redirect&redirect-ttl=2m',
      bucketEndpoint,
    );
    await pushClosure(cache, push, 's3redirect');
    const big = await narUrl(cache, built.get('s3redirect-big')!);

    const refused = await rawRequest(`${cache.url}/${big}`);
    assert.equal(refused.status, 401, 'a private cache must check the token before redirecting');
    assert.equal(refused.headers.location, undefined);

    const res = await rawRequest(`${cache.url}/${big}`, { headers: bearer(cache.pullToken) });
    assert.equal(res.status, 302);
    assert.equal(res.headers['cache-control'], 'no-store');
    const location = new URL(res.headers.location!);
    assert.equal(location.origin, bucketEndpoint);
    assert.equal(location.pathname, `/cairn-test/redirect/caches/1/${big}`);
    assert.equal(location.searchParams.get('X-Amz-Expires'), '120');
    const direct = await rawRequest(location.href);
    assert.equal(direct.status, 200);
    const ranged = await rawRequest(location.href, { headers: { Range: 'bytes=0-99' } });
    assert.equal(ranged.status, 206);
    assert.deepEqual(ranged.bytes, direct.bytes.subarray(0, 100));
    // HEAD needs no redirect: the server knows the size.
    const head = await rawRequest(`${cache.url}/${big}`, {
      method: 'HEAD',
      headers: bearer(cache.pullToken),
    });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(direct.bytes.length));

    await substituteBack(cache, pull, 's3redirect');
  });

  it('a NAR upload cut off mid-way aborts its multipart upload and publishes nothing', async () => {
    const { cache } = await s3Server('cut', 'downloads=proxy');
    const nar = narOfFile(randomBytes(20 * 1024 * 1024));
    const path = syntheticPath('cut', 'unused');
    const narHash = nixSha256(nar);
    const narFile = `${narHash.slice(7)}.nar`;
    const target = new URL(`${cache.url}/nar/${narFile}`);
    const req = request({
      host: target.hostname,
      port: target.port,
      method: 'PUT',
      path: target.pathname,
      headers: { ...bearer(cache.pushToken), 'Content-Length': nar.length },
    });
    req.on('error', () => {});
    req.write(nar.subarray(0, 12 * 1024 * 1024));
    // The first 8 MiB part is on its way: the multipart upload exists in the bucket.
    const started = await until('the multipart upload to start', async () => {
      const uploads = await s3.incompleteUploads();
      return uploads.length > 0 ? uploads : undefined;
    });
    assert.deepEqual(
      started.map((u) => u.key),
      [`cut/caches/1/nar/${narFile}`],
    );
    req.destroy();

    await until('the multipart upload to be aborted', async () =>
      (await s3.incompleteUploads()).length === 0 ? true : undefined,
    );
    assert.ok(
      s3.requests.some((r) =>
        r.startsWith(`DELETE /cairn-test/cut/caches/1/nar/${narFile}?uploadId=${started[0]!.uploadId}`),
      ),
    );
    assert.ok(!(await s3.objectKeys()).some((k) => k.startsWith('cut/')), 'no object may be left');

    const fields = {
      ...path.fields,
      URL: `nar/${narFile}`,
      FileHash: narHash,
      FileSize: String(nar.length),
      NarHash: narHash,
      NarSize: String(nar.length),
    };
    const put = await rawRequest(`${cache.url}/${path.hashPart}.narinfo`, {
      method: 'PUT',
      headers: bearer(cache.pushToken),
      body: narinfoText(fields),
    });
    assert.equal(put.status, 400);
    assert.equal(JSON.parse(put.body).code, 'UPLOAD_INCOMPLETE');
    const get = await rawRequest(`${cache.url}/${path.hashPart}.narinfo`, {
      headers: bearer(cache.pullToken),
    });
    assert.equal(get.status, 404);
    const nar404 = await rawRequest(`${cache.url}/nar/${narFile}`, { headers: bearer(cache.pullToken) });
    assert.equal(nar404.status, 404);
  });
});
