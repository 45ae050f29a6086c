import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseBlobStoreUrl } from '../../src/server/blob/blob-store-config.ts';
import { parseServerConfig } from '../../src/server/server-config.ts';

const problems = (url: string, env: NodeJS.ProcessEnv = {}) => {
  const got = parseBlobStoreUrl(url, env);
  assert.ok('problems' in got, `${url} was accepted`);
  return got.problems.join('\n');
};

describe('parseBlobStoreUrl', () => {
  it('reads every parameter, credentials from the environment, and defaults the rest', () => {
    const got = parseBlobStoreUrl(
      's3://nars/team/a/?endpoint=http://minio:9000/&region=eu-west-1&path-style=true&downloads=redirect&redirect-ttl=10m',
      { AWS_ACCESS_KEY_ID: 'id', AWS_SECRET_ACCESS_KEY: 'secret', AWS_SESSION_TOKEN: 'tok' },
    );
    assert.deepEqual(got, {
      config: {
        kind: 's3',
        bucket: 'nars',
        prefix: 'team/a/',
        endpoint: 'http://minio:9000',
        region: 'eu-west-1',
        pathStyle: true,
        downloads: 'redirect',
        redirectTtlSeconds: 600,
        credentials: { accessKeyId: 'id', secretAccessKey: 'secret', sessionToken: 'tok' },
      },
    });
    const plain = parseBlobStoreUrl('s3://nars', { AWS_REGION: 'us-west-2' });
    assert.ok('config' in plain);
    assert.equal(plain.config.kind === 's3' && plain.config.region, 'us-west-2');
    assert.equal(plain.config.kind === 's3' && plain.config.downloads, 'proxy');
    assert.equal(plain.config.kind === 's3' && plain.config.credentials, undefined);
  });

  it('refuses each wrong part, naming it', () => {
    assert.match(problems('nars'), /expected s3:\/\/BUCKET/);
    assert.match(problems('gs://nars'), /unknown scheme gs:/);
    assert.match(problems('s3://a'), /bucket name must be 3 to 63/);
    assert.match(problems('s3://nars:9000'), /a bucket has no port/);
    assert.match(problems('s3://nars/a b'), /key prefix may hold/);
    assert.match(problems('s3://nars?endpoint=minio:9000'), /endpoint must be an http\(s\) URL/);
    assert.match(
      problems('s3://nars?endpoint=http://minio/path'),
      /endpoint must be an http\(s\) URL without a path/,
    );
    assert.match(problems('s3://nars?region=EU'), /region must be lower-case/);
    assert.match(problems('s3://nars?path-style=yes'), /path-style must be true or false \(yes\)/);
    assert.match(problems('s3://nars?downloads=direct'), /downloads must be proxy or redirect \(direct\)/);
    assert.match(problems('s3://nars?downloads=redirect&redirect-ttl=0'), /redirect-ttl must be a duration/);
    assert.match(problems('s3://nars?downloads=redirect&redirect-ttl=8d'), /redirect-ttl must be a duration/);
    assert.match(problems('s3://nars?redirect-ttl=5m'), /applies only with downloads=redirect/);
    assert.match(problems('s3://nars?region=a&region=b'), /'region' is given more than once/);
    assert.match(problems('s3://nars?acl=public'), /unknown parameter 'acl'/);
    assert.match(problems('s3://nars', { AWS_SECRET_ACCESS_KEY: 'x' }), /only AWS_SECRET_ACCESS_KEY is set/);
    const secret = problems('s3://id:topsecret@nars');
    assert.match(secret, /credentials do not belong in the URL/);
    assert.doesNotMatch(secret, /topsecret/);
  });

  it('is the local blobs folder unless set, and CAIRN_BLOB_STORE is read as --blob-store', () => {
    const local = parseServerConfig({ dataDir: '/tmp/cairn-x' }, {});
    assert.deepEqual(local.blobStore, { kind: 'local', dir: '/tmp/cairn-x/blobs' });
    const s3 = parseServerConfig({ dataDir: '/tmp/cairn-x' }, { CAIRN_BLOB_STORE: 's3://nars' });
    assert.equal(s3.blobStore.kind, 's3');
    assert.throws(() => parseServerConfig({ blobStore: 's3://nars?x=1' }, {}), { code: 'INVALID_ARGUMENT' });
  });
});
