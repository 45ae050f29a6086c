import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import {
  bearer,
  createTestCache,
  listFiles,
  narinfoText,
  narOfFile,
  nixSha256,
  type RawResponse,
  rawRequest,
  type SyntheticPath,
  syntheticPath,
  type TestCache,
} from '../helpers/binary-cache.ts';
import { startTestServer, type TestServer } from '../helpers/server.ts';

interface ErrorJson {
  code: string;
  message: string;
}

function errorOf(res: RawResponse): ErrorJson {
  assert.match(String(res.headers['content-type']), /application\/json/);
  return JSON.parse(res.body) as ErrorJson;
}

/** Asserts an error answer: its status, its permanent code, and a message saying why. */
function assertRejected(res: RawResponse, status: number, code: string, message: RegExp): void {
  assert.equal(res.status, status, res.body);
  const body = errorOf(res);
  assert.equal(body.code, code);
  assert.match(body.message, /^Cannot /);
  assert.match(body.message, message);
}

describe('binary cache uploads: credentials and verification', () => {
  let server: TestServer;
  let cache: TestCache;
  let other: TestCache;
  let push: Record<string, string>;

  before(async () => {
    server = await startTestServer();
    cache = await createTestCache(server, 'main');
    other = await createTestCache(server, 'other');
    push = bearer(cache.pushToken);
  });
  after(() => server.stop());

  /** Everything an upload could leave behind: blob files (`.tmp/` included) and index rows. */
  async function snapshot() {
    return {
      blobs: await listFiles(join(server.dataDir, 'blobs')),
      narFiles: await server.query(sql`SELECT cache_id, file_name FROM nar_files ORDER BY 1, 2`),
      storePaths: await server.query(sql`SELECT cache_id, hash_part FROM store_paths ORDER BY 1, 2`),
    };
  }

  /** Runs `fn` and checks that it left nothing behind; waits a little for cleanup after a cut connection. */
  async function leavesNothing(fn: () => Promise<void>): Promise<void> {
    const before = await snapshot();
    await fn();
    let now = await snapshot();
    for (let i = 0; i < 40 && JSON.stringify(now) !== JSON.stringify(before); i++) {
      await sleep(50);
      now = await snapshot();
    }
    assert.deepEqual(now, before);
  }

  const put = (path: string, body: Buffer | string, headers: Record<string, string> = push) =>
    rawRequest(`${cache.url}/${path}`, { method: 'PUT', headers, body });
  const head = (path: string) => rawRequest(`${cache.url}/${path}`, { method: 'HEAD', headers: push });

  /** Uploads a synthetic path completely and correctly. */
  async function publish(p: SyntheticPath): Promise<void> {
    assert.equal((await put(`nar/${p.narFile}`, p.nar)).status, 201);
    const res = await put(`${p.hashPart}.narinfo`, narinfoText(p.fields));
    assert.equal(res.status, 201, res.body);
  }

  it('accepts a correct upload, signs the narinfo and indexes it', async () => {
    const dep = syntheticPath('dep', 'dep contents');
    await publish(dep);
    const p = syntheticPath('top', `uses ${dep.storePath}`, [dep.storePath.slice(11)]);
    await publish(p);
    const res = await rawRequest(`${cache.url}/${p.hashPart}.narinfo`, { headers: bearer(cache.pullToken) });
    assert.equal(res.status, 200);
    assert.match(res.body, new RegExp(`^References: ${dep.storePath.slice(11)}$`, 'm'));
    assert.match(res.body, /^Sig: main-1:/m);
    const rows = await server.query<{ refs: string; compression: string }>(
      sql`SELECT refs, compression FROM store_paths WHERE hash_part = ${p.hashPart}`,
    );
    assert.deepEqual(rows, [{ refs: dep.storePath.slice(11), compression: 'none' }]);
  });

  it('refuses a PUT without a token with 401 and a pull-only token with 403, for every file type', async () => {
    const p = syntheticPath('denied', 'denied');
    await leavesNothing(async () => {
      for (const path of [
        `nar/${p.narFile}`,
        `${p.hashPart}.narinfo`,
        'log/abc-foo.drv',
        'realisations/x.doi',
      ]) {
        const body = path.endsWith('.narinfo') ? narinfoText(p.fields) : p.nar;
        const none = await put(path, body, {});
        assertRejected(none, 401, 'UNAUTHENTICATED', /token is required/);
        assert.match(String(none.headers['www-authenticate']), /^Basic /);
        const bad = await put(path, body, bearer(`cairn_${'A'.repeat(43)}`));
        assertRejected(bad, 401, 'UNAUTHENTICATED', /unknown token/);
        const pullOnly = await put(path, body, bearer(cache.pullToken));
        assertRejected(pullOnly, 403, 'FORBIDDEN', /lacks the cache:main:push scope/);
        const otherCache = await put(path, body, bearer(other.pushToken));
        assertRejected(otherCache, 403, 'FORBIDDEN', /lacks the cache:main:push scope/);
      }
    });
    // Netrc credentials arrive as Basic auth with any user name.
    const basic = `Basic ${Buffer.from(`whoever:${cache.pushToken}`).toString('base64')}`;
    assert.equal((await put(`nar/${p.narFile}`, p.nar, { Authorization: basic })).status, 201);
  });

  it('refuses a NAR whose contents do not hash to its file name', async () => {
    const p = syntheticPath('misnamed', 'real contents');
    const wrong = syntheticPath('misnamed', 'other contents');
    await leavesNothing(async () => {
      const res = await put(`nar/${wrong.narFile}`, p.nar);
      assertRejected(res, 400, 'UPLOAD_MISMATCH', /sha256 is .* but its name says/);
    });
    assert.equal((await head(`nar/${wrong.narFile}`)).status, 404);
  });

  it('refuses a narinfo whose NarHash or NarSize does not match its NAR, and drops that NAR', async () => {
    const p = syntheticPath('mismatch', 'uploaded contents');
    const claimed = syntheticPath('mismatch', 'claimed contents, longer');
    await leavesNothing(async () => {
      assert.equal((await put(`nar/${p.narFile}`, p.nar)).status, 201);
      const res = await put(
        `${p.hashPart}.narinfo`,
        narinfoText(p.fields, { NarHash: claimed.fields.NarHash!, NarSize: claimed.fields.NarSize! }),
      );
      assertRejected(res, 400, 'UPLOAD_MISMATCH', /NarHash is .* but the uploaded NAR file has/);
    });
    assert.equal((await head(`nar/${p.narFile}`)).status, 404);
    assert.equal((await head(`${p.hashPart}.narinfo`)).status, 404);
    await leavesNothing(async () => {
      assert.equal((await put(`nar/${p.narFile}`, p.nar)).status, 201);
      const res = await put(`${p.hashPart}.narinfo`, narinfoText(p.fields, { NarSize: '8' }));
      assertRejected(res, 400, 'UPLOAD_MISMATCH', /NarSize is 8/);
    });
  });

  it('refuses uploads with a Content-Encoding it would serve back undecoded (log-compression and the like)', async () => {
    const { brotliCompressSync } = await import('node:zlib');
    const log = brotliCompressSync(Buffer.from('a build log\n'));
    const p = syntheticPath('encoded', 'encoded');
    await leavesNothing(async () => {
      for (const [path, body] of [
        ['log/encoded-1.drv', log],
        [`${p.hashPart}.narinfo`, brotliCompressSync(narinfoText(p.fields))],
      ] as const) {
        const res = await put(path, body, { ...push, 'Content-Encoding': 'br' });
        assertRejected(res, 400, 'UNSUPPORTED_COMPRESSION', /Content-Encoding br is not accepted/);
      }
    });
    // Uncompressed, the same log is taken (identity is no encoding).
    const plain = await put('log/encoded-1.drv', 'a build log\n', {
      ...push,
      'Content-Encoding': 'identity',
    });
    assert.equal(plain.status, 201, plain.body);
  });

  it('refuses a truncated NAR, uncompressed, xz, zstd or bzip2', async () => {
    // Random contents do not compress, so a cut compressed file is cut inside the archive too.
    const nar = narOfFile(randomBytes(100_000));
    const cut = nar.subarray(0, 50_000);
    const xz = spawnSync('xz', ['-c'], { input: nar }).stdout.subarray(0, 50_000);
    const zst = spawnSync('zstd', ['-c', '-q'], { input: nar }).stdout.subarray(0, 50_000);
    const bz2 = spawnSync('bzip2', ['-c'], { input: nar }).stdout.subarray(0, 50_000);
    await leavesNothing(async () => {
      // Each file is named by its own hash, so only the archive inside can be at fault.
      const plain = await put(`nar/${nixSha256(cut).slice(7)}.nar`, cut);
      assertRejected(plain, 400, 'INVALID_NAR', /Cannot upload NAR|Cannot unpack NAR/);
      const xzRes = await put(`nar/${nixSha256(xz).slice(7)}.nar.xz`, xz);
      assertRejected(xzRes, 400, 'INVALID_NAR', /not valid xz data|Cannot unpack NAR/);
      const zstRes = await put(`nar/${nixSha256(zst).slice(7)}.nar.zst`, zst);
      assertRejected(zstRes, 400, 'INVALID_NAR', /not valid zstd data|Cannot unpack NAR/);
      const bz2Res = await put(`nar/${nixSha256(bz2).slice(7)}.nar.bz2`, bz2);
      assertRejected(bz2Res, 400, 'INVALID_NAR', /not valid bzip2 data|Cannot unpack NAR/);
    });
  });

  it('refuses data that is not a NAR with a 400, not a reset connection or a hang, at any size', {
    timeout: 20_000,
  }, async () => {
    await leavesNothing(async () => {
      for (const size of [100, 70_000, 4 * 1024 * 1024]) {
        for (const [ext, message] of [
          ['.nar', /bad magic, not a NAR archive/],
          ['.nar.xz', /not valid xz data|archive is truncated/],
          ['.nar.zst', /not valid zstd data|archive is truncated/],
          ['.nar.bz2', /not valid bzip2 data|archive is truncated/],
        ] as const) {
          const body = randomBytes(size);
          const res = await put(`nar/${nixSha256(body).slice(7)}${ext}`, body);
          assertRejected(res, 400, 'INVALID_NAR', message);
        }
      }
      // Valid compressed data with more after it is not a NAR file either.
      const nar = narOfFile(Buffer.from('tail'));
      const xz = Buffer.concat([spawnSync('xz', ['-c'], { input: nar }).stdout, Buffer.from('garbage!')]);
      assertRejected(await put(`nar/${nixSha256(xz).slice(7)}.nar.xz`, xz), 400, 'INVALID_NAR', /xz/);
      const bz2 = Buffer.concat([spawnSync('bzip2', ['-c'], { input: nar }).stdout, Buffer.from('garbage!')]);
      assertRejected(
        await put(`nar/${nixSha256(bz2).slice(7)}.nar.bz2`, bz2),
        400,
        'INVALID_NAR',
        /bzip2 stream/,
      );
      const plain = Buffer.concat([nar, Buffer.alloc(8)]);
      assertRejected(
        await put(`nar/${nixSha256(plain).slice(7)}.nar`, plain),
        400,
        'INVALID_NAR',
        /trailing data/,
      );
    });
  });

  it('keeps nothing of an upload whose connection is cut before the declared length', async () => {
    const nar = narOfFile(Buffer.alloc(4 * 1024 * 1024, 'y'));
    const name = `${nixSha256(nar).slice(7)}.nar`;
    await leavesNothing(async () => {
      await new Promise<void>((resolve) => {
        const req = request(`${cache.url}/nar/${name}`, {
          method: 'PUT',
          headers: { ...push, 'Content-Length': nar.length },
        });
        req.on('error', () => resolve());
        req.write(nar.subarray(0, 1024 * 1024), () => setTimeout(() => req.destroy(), 100));
        req.on('close', () => resolve());
      });
    });
    assert.equal((await head(`nar/${name}`)).status, 404);
    // The same upload in full then succeeds.
    assert.equal((await put(`nar/${name}`, nar)).status, 201);
  });

  it('refuses a narinfo with an invalid store path or reference, and drops its NAR', async () => {
    const dep = syntheticPath('dep2', 'dep2');
    await publish(dep);
    const cases: [Record<string, string | undefined>, string, RegExp][] = [
      [{ StorePath: '/nix/store/xyz-bad' }, 'INVALID_NARINFO', /StorePath is not a valid store path/],
      [{ StorePath: '/etc/00000000000000000000000000000000-bad' }, 'INVALID_NARINFO', /StorePath/],
      [{ References: '../../etc/passwd' }, 'INVALID_NARINFO', /reference 1 is not a valid store path/],
      [
        { References: `${dep.storePath.slice(11)} eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x` },
        'INVALID_NARINFO',
        /reference 2 is not a valid store path .*not nix32/,
      ],
    ];
    for (const [changes, code, message] of cases) {
      const p = syntheticPath('badpath', `bad ${code} ${JSON.stringify(changes)}`);
      await leavesNothing(async () => {
        assert.equal((await put(`nar/${p.narFile}`, p.nar)).status, 201);
        assertRejected(
          await put(`${p.hashPart}.narinfo`, narinfoText(p.fields, changes)),
          400,
          code,
          message,
        );
      });
    }
  });

  it('refuses a narinfo without Compression or References, or with references the cache lacks', async () => {
    const absent = syntheticPath('absent', 'never uploaded');
    const cases: [Record<string, string | undefined>, string, RegExp][] = [
      [{ Compression: undefined }, 'BAD_REQUEST', /no Compression line, which Nix would read as bzip2/],
      [{ References: undefined }, 'BAD_REQUEST', /no References line/],
      [
        { References: absent.storePath.slice(11) },
        'UPLOAD_INCOMPLETE',
        /1 reference\(s\) are not in the cache; upload dependencies first/,
      ],
    ];
    for (const [changes, code, message] of cases) {
      const p = syntheticPath('incomplete', `incomplete ${code} ${JSON.stringify(changes)}`);
      await leavesNothing(async () => {
        assert.equal((await put(`nar/${p.narFile}`, p.nar)).status, 201);
        const res = await put(`${p.hashPart}.narinfo`, narinfoText(p.fields, changes));
        assertRejected(res, 400, code, message);
      });
      assert.equal((await head(`${p.hashPart}.narinfo`)).status, 404);
    }
    // A path that references itself needs nothing else.
    const self = syntheticPath('self', 'self');
    await publish({ ...self, fields: { ...self.fields, References: self.storePath.slice(11) } });
  });

  it('refuses a narinfo naming a NAR the cache does not hold, or under another hash part', async () => {
    const p = syntheticPath('nonar', 'no nar');
    await leavesNothing(async () => {
      const res = await put(`${p.hashPart}.narinfo`, narinfoText(p.fields));
      assertRejected(res, 400, 'UPLOAD_INCOMPLETE', /holds no NAR file/);
    });
    const q = syntheticPath('moved', 'moved');
    const otherHash = syntheticPath('moved', 'x').hashPart;
    await leavesNothing(async () => {
      assert.equal((await put(`nar/${q.narFile}`, q.nar)).status, 201);
      const res = await put(`${otherHash}.narinfo`, narinfoText(q.fields));
      assertRejected(res, 400, 'UPLOAD_MISMATCH', /does not match the file name/);
    });
  });

  it('refuses path-traversal file names with 400 and writes nothing', async () => {
    const nar = narOfFile(Buffer.from('evil'));
    const paths = [
      '/cache/main/nar/../../x',
      '/cache/main/nar/..%2f..%2fx',
      '/cache/main/nar/%2e%2e',
      '/cache/main/nar/%2E%2E/%2E%2E/admin-token',
      '/cache/main/log/..',
      '/cache/main/log/%2e%2e',
      '/cache/main/log/.',
      '/cache/main/log/..%2f..%2fadmin-token',
      '/cache/main/log/a%00b',
      '/cache/main/log/a%5c..%5cb',
      '/cache/main/realisations/..%2fx.doi',
      '/cache/main/debuginfo/%2e%2e%2f%2e%2e%2fx',
      '/cache/main/./nix-cache-info',
      '/cache/main/../main/log/x',
    ];
    await leavesNothing(async () => {
      for (const path of paths) {
        const res = await rawRequest(server.url, { method: 'PUT', path, headers: push, body: nar });
        assert.ok(res.status === 400, `${path}: ${res.status} ${res.body}`);
        const body = errorOf(res);
        assert.equal(body.code, 'BAD_REQUEST', path);
        assert.match(body.message, /^Cannot use path: '.' and '..' segments/, path);
        const get = await rawRequest(server.url, { path, headers: push });
        assert.equal(get.status, 400, `GET ${path}: ${get.body}`);
      }
    });
    // A malformed escape in the cache name or a file name is a 400, not a 500.
    for (const path of ['/cache/%zz/nix-cache-info', '/cache/main/log/%zz']) {
      assertRejected(await rawRequest(server.url, { path, headers: push }), 400, 'BAD_REQUEST', /percent/);
    }
  });

  it('checks credentials before reading the body of an Expect: 100-continue upload', async () => {
    const p = syntheticPath('expect', 'expect');
    /** Sends headers only and waits for the answer: a 100 Continue, or a final status. */
    const ask = (headers: Record<string, string>) =>
      new Promise<{ continued: boolean; status?: number; body?: string }>((resolve, reject) => {
        const req = request(`${cache.url}/nar/${p.narFile}`, {
          method: 'PUT',
          headers: { ...headers, Expect: '100-continue', 'Content-Length': 10 * 1024 * 1024 },
        });
        const timer = setTimeout(() => reject(new Error('no answer within 2 s')), 2000);
        req.on('continue', () => {
          clearTimeout(timer);
          req.destroy();
          resolve({ continued: true });
        });
        req.on('response', (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => {
            clearTimeout(timer);
            resolve({ continued: false, status: res.statusCode ?? 0, body });
          });
        });
        req.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        req.flushHeaders();
      });
    await leavesNothing(async () => {
      const none = await ask({});
      assert.equal(none.continued, false);
      assert.equal(none.status, 401);
      assert.equal((JSON.parse(none.body!) as ErrorJson).code, 'UNAUTHENTICATED');
      const bad = await ask(bearer(`cairn_${'B'.repeat(43)}`));
      assert.equal(bad.status, 401);
      const pullOnly = await ask(bearer(cache.pullToken));
      assert.equal(pullOnly.status, 403);
      assert.equal((JSON.parse(pullOnly.body!) as ErrorJson).code, 'FORBIDDEN');
      const good = await ask(push);
      assert.equal(good.continued, true);
    });
  });
});
