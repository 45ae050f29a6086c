import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { bearer, createTestCache, narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';
import { until } from '../helpers/staged-rollout.ts';

describe('the binary cache of two replicas on one PostgreSQL database', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  /** Two replicas on a fresh PostgreSQL database, and the admin token the first start wrote. */
  async function twoReplicas() {
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
    return { a, b, adminToken };
  }

  it('a path B answered 404 for is served by B as soon as it is published through A', async () => {
    const { a, b, adminToken } = await twoReplicas();
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

  it('a key rotated or retired through A changes what B serves from memory at once', async () => {
    const { a, b, adminToken } = await twoReplicas();
    const cache = await createTestCache({ url: a.url, adminToken }, 'rotated', { public: true });
    const path = syntheticPath('rotated', 'signed before the rotation');
    await rawRequest(`${cache.url}/nar/${path.narFile}`, {
      method: 'PUT',
      headers: bearer(cache.pushToken),
      body: path.nar,
    });
    const put = await rawRequest(`${cache.url}/${path.hashPart}.narinfo`, {
      method: 'PUT',
      headers: bearer(cache.pushToken),
      body: narinfoText(path.fields),
    });
    assert.equal(put.status, 201, put.body);
    const sigsOnB = async () =>
      [
        ...(await rawRequest(`${b.url}/cache/${cache.name}/${path.hashPart}.narinfo`)).body.matchAll(
          /^Sig: ([^:]+):/gm,
        ),
      ].map((m) => m[1]);
    // B holds it in memory, signed by the first key alone.
    assert.deepEqual(await sigsOnB(), ['rotated-1']);
    assert.deepEqual(await sigsOnB(), ['rotated-1']);

    const admin = { Authorization: `Bearer ${adminToken}` };
    const keysUrl = `${a.url}/api/v1/workspaces/default/caches/${cache.name}/keys`;
    assert.equal((await rawRequest(keysUrl, { method: 'POST', headers: admin })).status, 201);
    // The doorbell reaches B within moments; its backstop (30 s) is not what this waits for.
    await until(
      'B signs with both keys',
      async () => ((await sigsOnB()).length === 2 ? true : undefined),
      5000,
    );
    assert.deepEqual(await sigsOnB(), ['rotated-1', 'rotated-2']);

    assert.equal(
      (await rawRequest(`${keysUrl}/rotated-1`, { method: 'DELETE', headers: admin })).status,
      200,
    );
    await until(
      'B signs with the new key alone',
      async () => ((await sigsOnB()).length === 1 ? true : undefined),
      5000,
    );
    assert.deepEqual(await sigsOnB(), ['rotated-2']);
  });
});
