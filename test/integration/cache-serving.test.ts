import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  bearer,
  createTestCache,
  narinfoText,
  narOfFile,
  nixSha256,
  rawRequest,
  type SyntheticPath,
  syntheticPath,
  type TestCache,
} from '../helpers/binary-cache.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

describe('binary cache serving: ranges, HEAD, public and private caches', () => {
  let server: TestServer;
  let priv: TestCache;
  let pub: TestCache;
  let path: SyntheticPath;
  const logName = 'xyz00000000000000000000000000000-hello.drv';
  const realisation = `sha256:${'ab'.repeat(32)}!out.doi`;
  const logText = 'build log\n';
  const emptyLogName = 'xyz00000000000000000000000000000-quiet.drv';
  const realisationText = '{"id":"x","outPath":"y","signatures":[],"dependentRealisations":{}}';

  /** Publishes the same synthetic path, a log and a realisation in a cache. */
  async function fill(cache: TestCache): Promise<void> {
    const headers = bearer(cache.pushToken);
    const put = async (file: string, body: Buffer | string) => {
      const res = await rawRequest(`${cache.url}/${file}`, { method: 'PUT', headers, body });
      assert.equal(res.status, 201, `${file}: ${res.body}`);
    };
    await put(`nar/${path.narFile}`, path.nar);
    await put(`${path.hashPart}.narinfo`, narinfoText(path.fields));
    await put(`log/${logName}`, logText);
    await put(`log/${emptyLogName}`, '');
    // Nix names realisations `<algo>:<hex>!<output>.doi`; curl sends `:` and `!` as they are.
    await put(`realisations/${realisation}`, realisationText);
  }

  before(async () => {
    server = await startTestServer();
    priv = await createTestCache(server, 'private');
    pub = await createTestCache(server, 'public', { public: true });
    // Random bytes, so the NAR has no repeating pattern that would hide an off-by-one.
    path = syntheticPath('served', randomBytes(300_000).toString('latin1'));
    await fill(priv);
    await fill(pub);
  });
  after(() => server.stop());

  const pull = () => bearer(priv.pullToken);
  const get = (file: string, headers: Record<string, string> = pull(), method = 'GET') =>
    rawRequest(`${priv.url}/${file}`, { method, headers });

  /** GETs a byte range of the NAR as raw bytes. */
  async function range(header: string): Promise<{ status: number; headers: Headers; body: Buffer }> {
    const res = await fetch(`${priv.url}/nar/${path.narFile}`, { headers: { ...pull(), Range: header } });
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  }

  it('serves the whole NAR with its length, type and cache headers', async () => {
    const res = await fetch(`${priv.url}/nar/${path.narFile}`, { headers: pull() });
    assert.equal(res.status, 200);
    const body = Buffer.from(await res.arrayBuffer());
    assert.equal(nixSha256(body), path.fields.NarHash);
    assert.equal(res.headers.get('content-length'), String(path.nar.length));
    assert.equal(res.headers.get('content-type'), 'application/x-nix-nar');
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    assert.match(res.headers.get('cache-control') ?? '', /^private, .*immutable/);
  });

  it('answers Range requests on NARs with 206 and Content-Range', async () => {
    const size = path.nar.length;
    const cases: [string, number, number][] = [
      ['bytes=0-9', 0, 9],
      ['bytes=100-', 100, size - 1],
      ['bytes=-500', size - 500, size - 1],
      [`bytes=${size - 1}-${size - 1}`, size - 1, size - 1],
      [`bytes=1000-${size + 5000}`, 1000, size - 1],
      [`bytes=-${size + 10}`, 0, size - 1],
    ];
    for (const [header, start, end] of cases) {
      const res = await range(header);
      assert.equal(res.status, 206, header);
      assert.equal(res.headers.get('content-range'), `bytes ${start}-${end}/${size}`, header);
      assert.equal(res.headers.get('content-length'), String(end - start + 1), header);
      assert.ok(res.body.equals(path.nar.subarray(start, end + 1)), header);
    }
  });

  it('answers 416 with Content-Range for an unsatisfiable range, and ignores ranges it does not serve', async () => {
    const size = path.nar.length;
    for (const header of [`bytes=${size}-`, `bytes=${size + 100}-${size + 200}`, 'bytes=-0']) {
      const res = await range(header);
      assert.equal(res.status, 416, header);
      assert.equal(res.headers.get('content-range'), `bytes */${size}`, header);
      assert.equal((JSON.parse(res.body.toString()) as { code: string }).code, 'RANGE_NOT_SATISFIABLE');
    }
    // Several ranges, another unit, or nonsense: the whole file, as RFC 9110 allows.
    for (const header of ['bytes=0-1,5-6', 'items=0-1', 'bytes=abc', 'bytes=9-3']) {
      const res = await range(header);
      assert.equal(res.status, 200, header);
      assert.equal(res.body.length, size, header);
    }
  });

  it('answers HEAD on every file type like GET, without a body', async () => {
    const files = [
      'nix-cache-info',
      `${path.hashPart}.narinfo`,
      `nar/${path.narFile}`,
      `log/${logName}`,
      `log/${emptyLogName}`,
      `realisations/${realisation}`,
    ];
    for (const file of files) {
      const g = await get(file);
      const h = await get(file, pull(), 'HEAD');
      assert.equal(g.status, 200, `${file}: ${g.body}`);
      assert.equal(h.status, 200, file);
      assert.equal(h.body, '', file);
      assert.equal(h.headers['content-length'], String(g.bytes.length), file);
      assert.equal(h.headers['content-length'], g.headers['content-length'], file);
      assert.equal(h.headers['content-type'], g.headers['content-type'], file);
    }
    assert.equal((await get(`log/${logName}`)).body, logText);
    // A browser shows a build log instead of downloading it.
    assert.equal((await get(`log/${logName}`)).headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal((await get(`log/${emptyLogName}`)).headers['content-length'], '0');
    assert.equal((await get(`realisations/${encodeURIComponent(realisation)}`)).body, realisationText);
    const info = await get(`${path.hashPart}.narinfo`);
    assert.equal(info.headers['content-type'], 'text/x-nix-narinfo');
    assert.match(info.body, /^Sig: private-1:/m);
    // Missing files: 404 for HEAD and GET alike, never a 5xx.
    const missing = syntheticPath('missing', 'missing');
    for (const file of [
      `${missing.hashPart}.narinfo`,
      `nar/${missing.narFile}`,
      'log/nothing-here.drv',
      'realisations/none.doi',
      'nonsense',
      'nar/a/b',
    ]) {
      for (const method of ['GET', 'HEAD']) {
        const res = await get(file, pull(), method);
        assert.equal(res.status, 404, `${method} ${file}: ${res.body}`);
        if (method === 'GET') assert.equal((JSON.parse(res.body) as { code: string }).code, 'NOT_FOUND');
      }
    }
    const noCache = await rawRequest(`${server.url}/cache/absent/nix-cache-info`);
    assert.equal(noCache.status, 404);
  });

  it('serves a public cache without a token, and a private one only with a token that may pull it', async () => {
    const files = ['nix-cache-info', `${path.hashPart}.narinfo`, `nar/${path.narFile}`, `log/${logName}`];
    for (const file of files) {
      assert.equal((await rawRequest(`${pub.url}/${file}`)).status, 200, `public ${file}`);
      const none = await get(file, {});
      assert.equal(none.status, 401, `private ${file}`);
      assert.equal((JSON.parse(none.body) as { code: string }).code, 'UNAUTHENTICATED');
      assert.match(String(none.headers['www-authenticate']), /^Basic realm=/);
      const wrong = await get(file, bearer(pub.pullToken));
      assert.equal(wrong.status, 403, `private ${file} with another cache's token`);
      assert.equal((JSON.parse(wrong.body) as { code: string }).code, 'FORBIDDEN');
      assert.equal((await get(file, bearer(priv.pullToken))).status, 200);
      assert.equal((await get(file, bearer(priv.pushToken))).status, 200, 'push implies pull');
      assert.equal((await get(file, bearer(server.adminToken))).status, 200);
    }
    const basic = `Basic ${Buffer.from(`nix:${priv.pullToken}`).toString('base64')}`;
    assert.equal((await get('nix-cache-info', { Authorization: basic })).status, 200);
    const pubInfo = await rawRequest(`${pub.url}/${path.hashPart}.narinfo`);
    assert.match(String(pubInfo.headers['cache-control']), /^public/);
    assert.match(pubInfo.body, /^Sig: public-1:/m);
    // Each cache signs with its own key: the same path carries a different signature.
    assert.doesNotMatch(pubInfo.body, /private-1:/);
  });

  it('refuses methods other than GET, HEAD and PUT', async () => {
    const res = await rawRequest(`${priv.url}/nix-cache-info`, {
      method: 'DELETE',
      headers: bearer(priv.pushToken),
    });
    assert.equal(res.status, 405);
    assert.equal(res.headers.allow, 'GET, HEAD, PUT');
    assert.equal((JSON.parse(res.body) as { code: string }).code, 'METHOD_NOT_ALLOWED');
  });

  it('serves an uploaded xz or zstd NAR file as uploaded', async () => {
    const { spawnSync } = await import('node:child_process');
    for (const [tool, ext, compression] of [
      ['xz', '.nar.xz', 'xz'],
      ['zstd', '.nar.zst', 'zstd'],
    ] as const) {
      const p = syntheticPath(`packed-${compression}`, `packed ${compression}`);
      const file = spawnSync(tool, ['-c', '-q'], { input: p.nar }).stdout;
      const fileName = `${nixSha256(file).slice(7)}${ext}`;
      const headers = bearer(priv.pushToken);
      assert.equal(
        (await rawRequest(`${priv.url}/nar/${fileName}`, { method: 'PUT', headers, body: file })).status,
        201,
      );
      const fields = {
        ...p.fields,
        URL: `nar/${fileName}`,
        Compression: compression,
        FileHash: nixSha256(file),
        FileSize: String(file.length),
      };
      const info = await rawRequest(`${priv.url}/${p.hashPart}.narinfo`, {
        method: 'PUT',
        headers,
        body: narinfoText(fields),
      });
      assert.equal(info.status, 201, info.body);
      const res = await fetch(`${priv.url}/nar/${fileName}`, { headers: pull() });
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(file));
    }
    // A compression the cache does not take is refused by name.
    const bz = narOfFile(Buffer.from('br'));
    const res = await rawRequest(`${priv.url}/nar/${nixSha256(bz).slice(7)}.nar.br`, {
      method: 'PUT',
      headers: bearer(priv.pushToken),
      body: bz,
    });
    assert.equal(res.status, 400);
    assert.equal((JSON.parse(res.body) as { code: string }).code, 'UNSUPPORTED_COMPRESSION');
  });
});
