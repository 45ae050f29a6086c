import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { bearer, createTestCache, narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';

describe('the binary cache of two replicas on one PostgreSQL database', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('a path B answered 404 for is served by B as soon as it is published through A', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-cache-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = (db.config as { url: string }).url;
    const a = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'a'), database });
    cleanup.push(() => a.kill('SIGKILL'));
    const b = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'b'), database });
    cleanup.push(() => b.kill('SIGKILL'));
    const adminToken = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    // Public and private: B's hot path answers a public cache's narinfo without credentials,
    // a private one's with a remembered token.
    for (const pub of [true, false]) {
      const cache = await createTestCache({ url: a.url, adminToken }, `replicated-${pub}`, { public: pub });
      const path = syntheticPath('replicated', `published through A (${pub})`);
      const narinfoOn = (server: { url: string }) =>
        rawRequest(`${server.url}/cache/${cache.name}/${path.hashPart}.narinfo`, {
          headers: pub ? {} : bearer(cache.pullToken),
        });

      // B is asked first (twice: the second answer would come from memory if misses were kept).
      assert.equal((await narinfoOn(b)).status, 404);
      assert.equal((await narinfoOn(b)).status, 404);

      const nar = await rawRequest(`${cache.url}/nar/${path.narFile}`, {
        method: 'PUT',
        headers: bearer(cache.pushToken),
        body: path.nar,
      });
      assert.equal(nar.status, 201, nar.body);
      const put = await rawRequest(`${a.url}/cache/${cache.name}/${path.hashPart}.narinfo`, {
        method: 'PUT',
        headers: bearer(cache.pushToken),
        body: narinfoText(path.fields),
      });
      assert.equal(put.status, 201, put.body);

      // At once, with no doorbell to wait for: B keeps no memory of a miss.
      const first = await narinfoOn(b);
      assert.equal(first.status, 200, first.body);
      assert.match(first.body, new RegExp(`^StorePath: ${path.storePath}$`, 'm'));
      assert.match(first.body, new RegExp(`^Sig: ${cache.name}-1:`, 'm'));
      // From B's memory now, the same text A serves.
      const again = await narinfoOn(b);
      assert.equal(again.status, 200);
      assert.equal(again.body, first.body);
      assert.equal((await narinfoOn(a)).body, first.body);
    }
  });
});
