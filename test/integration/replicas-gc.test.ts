import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { bearer, narinfoText, rawRequest, syntheticPath } from '../helpers/binary-cache.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli, createTestDatabase, testPostgresUrl } from '../helpers/server.ts';
import { freePort, spawnServer } from '../helpers/server-process.ts';

describe('cache garbage collection with two replicas on one PostgreSQL database', {
  skip: !testPostgresUrl() && 'CAIRN_TEST_DATABASE_URL unset',
}, () => {
  const cleanup: Array<() => Promise<unknown>> = [];
  after(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it('one replica at a time collects a cache, and the other forgets the narinfos it removed', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cairn-replicas-gc-'));
    cleanup.push(() => rm(tmp, { recursive: true, force: true }));
    const db = await createTestDatabase();
    cleanup.push(() => db.drop());
    const database = (db.config as { url: string }).url;
    const env = { CAIRN_GC_INTERVAL: '0' };
    const a = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'a'), database, env });
    cleanup.push(() => a.kill('SIGKILL'));
    const b = await spawnServer({ port: await freePort(), dataDir: join(tmp, 'b'), database, env });
    cleanup.push(() => b.kill('SIGKILL'));
    const token = (await readFile(join(tmp, 'a', 'admin-token'), 'utf8')).trim();
    const viaA = { CAIRN_SERVER: a.url, CAIRN_TOKEN: token };
    const viaB = { CAIRN_SERVER: b.url, CAIRN_TOKEN: token };
    assert.equal((await cli(['cache', 'create', 'main'], viaA)).code, 0);

    // Enough paths that a collection lasts a while; uploaded through A (replicas share the
    // index; their blobs would share S3 in production, each its own disk here).
    const paths = Array.from({ length: 2000 }, (_, i) =>
      syntheticPath(`rgc${i}-${RUN_TAG}`, `replica gc ${i} ${RUN_TAG}`),
    );
    const auth = bearer(token);
    for (let i = 0; i < paths.length; i += 50) {
      await Promise.all(
        paths.slice(i, i + 50).map(async (p) => {
          const nar = await rawRequest(`${a.url}/cache/main/nar/${p.narFile}`, {
            method: 'PUT',
            headers: auth,
            body: p.nar,
          });
          assert.ok(nar.status < 300, nar.body);
          const info = await rawRequest(`${a.url}/cache/main/${p.hashPart}.narinfo`, {
            method: 'PUT',
            headers: auth,
            body: narinfoText(p.fields),
          });
          assert.ok(info.status < 300, info.body);
        }),
      );
    }
    // B has one of them in memory.
    const watched = paths[1234]!;
    assert.equal(
      (await rawRequest(`${b.url}/cache/main/${watched.hashPart}.narinfo`, { headers: auth })).status,
      200,
    );
    assert.equal((await cli(['cache', 'set', 'main', '--retention', '1s'], viaA)).code, 0);
    await sleep(1500);

    const [onA, onB] = await Promise.all([
      cli(['cache', 'gc', 'main', '--json'], viaA),
      cli(['cache', 'gc', 'main', '--json'], viaB),
    ]);
    const ran = [onA, onB].filter((r) => r.code === 0);
    const refused = [onA, onB].filter((r) => r.code !== 0);
    assert.equal(ran.length, 1, `exactly one collected: ${onA.stderr} | ${onB.stderr}`);
    assert.equal(refused.length, 1);
    assert.match(refused[0]!.stderr, /a collection of it is running \(on [^)]+\)/);
    assert.equal((JSON.parse(ran[0]!.stdout) as { paths: unknown[] }).paths.length, paths.length);

    // B forgets what A removed (or A what B removed): the narinfo is gone on both.
    for (const server of [a, b]) {
      let status = 0;
      for (let i = 0; i < 50; i++) {
        status = (await rawRequest(`${server.url}/cache/main/${watched.hashPart}.narinfo`, { headers: auth }))
          .status;
        if (status === 404) break;
        await sleep(100);
      }
      assert.equal(status, 404, `${server.url} still serves a removed narinfo`);
    }
    // The lease was let go: the next collection runs, on either replica.
    assert.equal((await cli(['cache', 'gc', 'main'], viaB)).code, 0);
  });
});
