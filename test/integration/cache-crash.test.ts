import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import {
  bearer,
  createTestCache,
  listFiles,
  narOfFile,
  nixSha256,
  queryDatabase,
  rawRequest,
  type Scratch,
  scratchDir,
  type TestCache,
} from '../helpers/binary-cache.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/server.ts';
import { freePort, type ServerProcess, spawnServer } from '../helpers/server-process.ts';

const MiB = 1024 * 1024;

/**
 * PUTs `body` in chunks with a pause after each, declaring its full length; with `stopAt`, sends
 * only that many bytes and then waits. Resolves when the server answers or the connection dies.
 */
function slowPut(
  url: string,
  body: Buffer,
  headers: Record<string, string>,
  options: { chunk: number; pauseMs: number; stopAt?: number },
): Promise<{ status?: number; error?: Error }> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'PUT', headers: { ...headers, 'Content-Length': body.length } });
    let done = false;
    req.on('response', (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', (error) => {
      done = true;
      resolve({ error });
    });
    const end = Math.min(options.stopAt ?? body.length, body.length);
    void (async () => {
      for (let off = 0; off < end && !done; off += options.chunk) {
        await new Promise<void>((r) =>
          req.write(body.subarray(off, Math.min(off + options.chunk, end)), () => r()),
        );
        await sleep(options.pauseMs);
      }
      if (!done && end === body.length) req.end();
    })();
  });
}

/** Waits until some temporary upload file under `tmpDir` holds at least `bytes`. */
async function untilPartHolds(tmpDir: string, bytes: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    for (const f of await listFiles(tmpDir)) {
      const size = await stat(join(tmpDir, f)).then(
        (s) => s.size,
        () => 0,
      );
      if (size >= bytes) return;
    }
    if (Date.now() > deadline) throw new Error(`no upload reached ${bytes} bytes in ${tmpDir}`);
    await sleep(10);
  }
}

describe('binary cache after a server crash', () => {
  let scratch: Scratch;
  let dataDir: string;
  let port: number;
  let server: ServerProcess | undefined;
  let cache: TestCache;
  let database: TestDatabase;
  /** Starts the server on the same port, data dir and database as before. */
  const start = async (): Promise<ServerProcess> => {
    const db = database.config;
    server = await spawnServer({
      port,
      dataDir,
      database: db.kind === 'sqlite' ? `sqlite:${db.file}` : db.url,
    });
    return server;
  };

  before(async () => {
    scratch = await scratchDir('cairn-crash-');
    dataDir = join(scratch.dir, 'data');
    port = await freePort();
    database = await createTestDatabase();
    const first = await start();
    const adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
    cache = await createTestCache({ url: first.url, adminToken }, 'main');
  });
  after(async () => {
    await server?.kill('SIGKILL');
    await scratch.cleanup();
    await database.drop();
  });

  it('SIGKILL in the middle of an upload leaves no partial NAR or narinfo, and the same upload then succeeds', async () => {
    const contents = randomBytes(32 * MiB);
    const nar = narOfFile(contents);
    const narHash = nixSha256(nar);
    const narFile = `${narHash.slice('sha256:'.length)}.nar`;
    const hashPart = nixSha256(randomBytes(8)).slice(7, 39);
    const storePath = `/nix/store/${hashPart}-crash`;
    const narinfo = [
      `StorePath: ${storePath}`,
      `URL: nar/${narFile}`,
      'Compression: none',
      `NarHash: ${narHash}`,
      `NarSize: ${nar.length}`,
      'References: ',
      '',
    ].join('\n');
    const push = bearer(cache.pushToken);
    const blobs = join(dataDir, 'blobs');
    const cacheBlobs = join(blobs, 'caches');

    /** Nothing of the upload can be seen: not over HTTP, not in the index, not among the blobs. */
    async function assertNothingVisible(what: { nar: boolean }): Promise<void> {
      const headNar = await rawRequest(`${cache.url}/nar/${narFile}`, { method: 'HEAD', headers: push });
      assert.equal(headNar.status, what.nar ? 200 : 404);
      const getInfo = await rawRequest(`${cache.url}/${hashPart}.narinfo`, { headers: push });
      assert.equal(getInfo.status, 404, getInfo.body);
      const published = sql`SELECT 1 FROM store_paths WHERE hash_part = ${hashPart}`;
      assert.deepEqual(await queryDatabase(database.config, published), []);
      const rows = await queryDatabase(
        database.config,
        sql`SELECT 1 FROM nar_files WHERE file_name = ${narFile}`,
      );
      assert.equal(rows.length, what.nar ? 1 : 0);
      const files = (await listFiles(cacheBlobs)).filter((f) => f.endsWith(narFile));
      assert.equal(files.length, what.nar ? 1 : 0, `${files}`);
    }

    // 1. Killed while the NAR streams in.
    const cut = slowPut(`${cache.url}/nar/${narFile}`, nar, push, { chunk: MiB, pauseMs: 15 });
    await untilPartHolds(join(blobs, '.tmp'), 8 * MiB);
    await server!.kill('SIGKILL');
    assert.ok((await cut).error, 'the upload should have been cut');
    // Dead server: the partial file is only in .tmp, never under caches/.
    assert.deepEqual(
      (await listFiles(cacheBlobs)).filter((f) => f.endsWith(narFile)),
      [],
    );
    await start();
    await assertNothingVisible({ nar: false });
    assert.deepEqual(await listFiles(join(blobs, '.tmp')), [], 'restart removes partial uploads');

    // 2. The same NAR in full; then killed while the narinfo streams in.
    const full = await slowPut(`${cache.url}/nar/${narFile}`, nar, push, { chunk: 8 * MiB, pauseMs: 0 });
    assert.equal(full.status, 201);
    const half = slowPut(`${cache.url}/${hashPart}.narinfo`, Buffer.from(narinfo), push, {
      chunk: 64,
      pauseMs: 0,
      stopAt: narinfo.length >> 1,
    });
    await sleep(200);
    await server!.kill('SIGKILL');
    assert.ok((await half).error, 'the narinfo upload should have been cut');
    await start();
    await assertNothingVisible({ nar: true });

    // 3. The same narinfo in full: published, and the NAR served whole.
    const published = await rawRequest(`${cache.url}/${hashPart}.narinfo`, {
      method: 'PUT',
      headers: push,
      body: narinfo,
    });
    assert.equal(published.status, 201, published.body);
    const info = await rawRequest(`${cache.url}/${hashPart}.narinfo`, { headers: push });
    assert.equal(info.status, 200);
    assert.match(info.body, /^Sig: main-1:/m);
    const res = await fetch(`${cache.url}/nar/${narFile}`, { headers: push });
    assert.equal(res.status, 200);
    const served = Buffer.from(await res.arrayBuffer());
    assert.equal(
      createHash('sha256').update(served).digest('hex'),
      createHash('sha256').update(nar).digest('hex'),
    );
  });
});
