import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sql } from 'kysely';
import {
  bearer,
  createTestCache,
  narinfoText,
  otherMachineNixEnv,
  rawRequest,
  type SyntheticPath,
  scratchDir,
  syntheticPath,
  type TestCache,
  writeNetrc,
} from '../helpers/binary-cache.ts';
import { buildPackages, RUN_TAG, run } from '../helpers/nix.ts';
import { cli, startTestServer, type TestServer } from '../helpers/server.ts';

interface GcJson {
  dryRun: boolean;
  paths: Array<{ storePath: string; reason: string }>;
  narFiles: Array<{ fileName: string }>;
}

describe('cache garbage collection against uploads, and the quota', () => {
  let server: TestServer;
  let env: Record<string, string>;

  before(async () => {
    server = await startTestServer({ env: { CAIRN_GC_INTERVAL: '0', CAIRN_GC_UPLOAD_GRACE: '2s' } });
    env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
  });
  after(() => server.stop());

  async function upload(
    c: TestCache,
    p: SyntheticPath,
    what: 'nar' | 'narinfo' | 'both' = 'both',
  ): Promise<void> {
    if (what !== 'narinfo') {
      const nar = await rawRequest(`${c.url}/nar/${p.narFile}`, {
        method: 'PUT',
        headers: bearer(c.pushToken),
        body: p.nar,
      });
      assert.ok(nar.status < 300, `${nar.status} ${nar.body}`);
    }
    if (what !== 'nar') {
      const info = await rawRequest(`${c.url}/${p.hashPart}.narinfo`, {
        method: 'PUT',
        headers: bearer(c.pushToken),
        body: narinfoText(p.fields),
      });
      assert.ok(info.status < 300, `${info.status} ${info.body}`);
    }
  }

  async function gc(name: string, dry: boolean): Promise<GcJson> {
    const r = await cli(['cache', 'gc', name, '--json', ...(dry ? ['--dry-run'] : [])], env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as GcJson;
  }

  const status = async (c: TestCache, rel: string) =>
    (await rawRequest(`${c.url}/${rel}`, { headers: bearer(c.pullToken) })).status;

  it('collects a NAR file no narinfo names only after the grace period', async () => {
    const c = await createTestCache(server, 'orphans');
    const p = syntheticPath(`orphan-${RUN_TAG}`, `orphan ${RUN_TAG}`);
    await upload(c, p, 'nar');
    assert.deepEqual(
      (await gc('orphans', false)).narFiles,
      [],
      'within the grace period: an upload in flight',
    );
    assert.equal(await status(c, `nar/${p.narFile}`), 200);
    await sleep(2200);
    assert.deepEqual(
      (await gc('orphans', true)).narFiles.map((f) => f.fileName),
      [p.narFile],
    );
    assert.deepEqual(
      (await gc('orphans', false)).narFiles.map((f) => f.fileName),
      [p.narFile],
    );
    assert.equal(await status(c, `nar/${p.narFile}`), 404);
    const late = await rawRequest(`${c.url}/${p.hashPart}.narinfo`, {
      method: 'PUT',
      headers: bearer(c.pushToken),
      body: narinfoText(p.fields),
    });
    assert.equal(late.status, 400);
    assert.match(late.body, /holds no NAR file .*upload it first/);
  });

  it('a quota drops the least recently used first, referrers before what they need, and never a root', async () => {
    const c = await createTestCache(server, 'quota');
    // Sizes differ so that the bytes kept tell which went.
    const root = syntheticPath(`root-${RUN_TAG}`, 'r'.repeat(5000));
    const lib = syntheticPath(`lib-${RUN_TAG}`, 'l'.repeat(300));
    const app = syntheticPath(`app-${RUN_TAG}`, 'a'.repeat(400), [lib.storePath.slice(11)]);
    const [p1, p2, p3, p4] = [1, 2, 3, 4].map((i) =>
      syntheticPath(`p${i}-${RUN_TAG}`, String(i).repeat(1000 + i * 100)),
    ) as [SyntheticPath, SyntheticPath, SyntheticPath, SyntheticPath];
    for (const p of [root, lib, app, p1, p2, p3, p4]) await upload(c, p);
    const pin = await cli(['cache', 'pin', 'quota', root.storePath], env);
    assert.equal(pin.code, 0, pin.stderr);
    // Fetches, a second apart: p1, then p3, then lib (needed by the old app).
    for (const p of [p1, p3, lib]) {
      await sleep(1100);
      assert.equal(await status(c, `${p.hashPart}.narinfo`), 200);
    }
    const size = (p: SyntheticPath) => p.nar.length;
    const quota = size(root) + size(lib) + size(p1) + size(p3);
    const set = await cli(['cache', 'set', 'quota', '--quota', String(quota)], env);
    assert.equal(set.code, 0, set.stderr);

    const planned = await gc('quota', true);
    // app is as old as its upload (it was never fetched) and goes before its lib, which was.
    assert.deepEqual(
      planned.paths.map((p) => [p.storePath, p.reason]),
      [app, p2, p4].map((p) => [p.storePath, 'quota']),
    );
    const done = await gc('quota', false);
    assert.deepEqual(done.paths, planned.paths);
    for (const p of [app, p2, p4]) assert.equal(await status(c, `${p.hashPart}.narinfo`), 404, p.storePath);
    for (const p of [root, lib, p1, p3])
      assert.equal(await status(c, `${p.hashPart}.narinfo`), 200, p.storePath);

    // A quota nothing but the root fits: everything else goes, the root stays. (Reading them just
    // now was a use: a collection beginning in the same second would spare them.)
    await sleep(1100);
    assert.equal((await cli(['cache', 'set', 'quota', '--quota', '1'], env)).code, 0);
    const all = await gc('quota', false);
    assert.deepEqual(all.paths.map((p) => p.storePath).sort(), [lib, p1, p3].map((p) => p.storePath).sort());
    assert.equal(await status(c, `${root.hashPart}.narinfo`), 200);
    assert.equal(await status(c, `nar/${root.narFile}`), 200);
  });

  it('an upload running during a collection ends complete and substitutable by the real Nix', async () => {
    const c = await createTestCache(server, 'busy');
    // Aged paths to keep the collector busy, and a real closure that is aged too.
    const filler = Array.from({ length: 1500 }, (_, i) =>
      syntheticPath(`filler${i}-${RUN_TAG}`, `filler ${i} ${RUN_TAG}`),
    );
    for (let i = 0; i < filler.length; i += 50)
      await Promise.all(filler.slice(i, i + 50).map((p) => upload(c, p)));
    const chain = Array.from({ length: 12 }, (_, i) => ({
      name: `busy${i}`,
      ...(i > 0 ? { deps: [`busy${i - 1}`] } : {}),
    }));
    const built = await buildPackages(chain);
    const top = built.get('busy11')!;
    const scratch = await scratchDir('cairn-gc-busy-');
    try {
      const pushNetrc = await writeNetrc(scratch.dir, c.pushToken, 'push');
      const pullNetrc = await writeNetrc(scratch.dir, c.pullToken, 'pull');
      const copyTo = () =>
        run(
          'nix',
          [
            'copy',
            '--to',
            c.url,
            top,
            '--option',
            'netrc-file',
            pushNetrc,
            '--option',
            'narinfo-cache-negative-ttl',
            '0',
          ],
          {
            env: otherMachineNixEnv(`${scratch.dir}/xdg-push-${Math.random()}`),
          },
        );
      await copyTo();
      // Re-uploaded by hand while the collection runs: the same NAR files it is removing.
      const again = filler.slice(0, 200);
      assert.equal((await cli(['cache', 'set', 'busy', '--retention', '1s'], env)).code, 0);
      await sleep(1500);
      const [collected] = await Promise.all([
        gc('busy', false),
        copyTo(),
        (async () => {
          for (const p of again) await upload(c, p);
        })(),
      ]);
      assert.ok(collected.paths.length > 1000, `the collection removed ${collected.paths.length} paths`);
      // Every re-uploaded path is whole: its narinfo and its NAR, byte for byte.
      for (const p of again) {
        assert.equal(await status(c, `${p.hashPart}.narinfo`), 200, p.storePath);
        const nar = await rawRequest(`${c.url}/nar/${p.narFile}`, { headers: bearer(c.pullToken) });
        assert.equal(nar.status, 200, p.storePath);
        assert.ok(nar.bytes.equals(p.nar), p.storePath);
      }
      // The closure pushed during the collection is substitutable by the real Nix.
      await run(
        'nix',
        [
          'copy',
          '--from',
          c.url,
          '--to',
          `file://${scratch.dir}/copy`,
          top,
          '--option',
          'trusted-public-keys',
          c.publicKey,
          '--option',
          'netrc-file',
          pullNetrc,
        ],
        { env: otherMachineNixEnv(`${scratch.dir}/xdg-pull`) },
      );
      // And no narinfo the cache serves names a NAR it lost.
      const rows = await server.query<{ hash_part: string; file_name: string }>(
        (await import('kysely'))
          .sql`select hash_part, file_name from store_paths s join caches c on c.id = s.cache_id where c.name = 'busy'`,
      );
      for (const r of rows) assert.equal(await status(c, `nar/${r.file_name}`), 200, r.hash_part);
    } finally {
      await scratch.cleanup();
    }
  });
});

describe('cache garbage collection on a schedule', () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ env: { CAIRN_GC_INTERVAL: '1s' } });
  });
  after(() => server.stop());

  it('collects every cache on its own, and says so in cache info', async () => {
    const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
    const c = await createTestCache(server, 'scheduled');
    const p = syntheticPath(`scheduled-${RUN_TAG}`, `scheduled ${RUN_TAG}`);
    const push = bearer(c.pushToken);
    assert.equal(
      (await rawRequest(`${c.url}/nar/${p.narFile}`, { method: 'PUT', headers: push, body: p.nar })).status,
      201,
    );
    const put = await rawRequest(`${c.url}/${p.hashPart}.narinfo`, {
      method: 'PUT',
      headers: push,
      body: narinfoText(p.fields),
    });
    assert.ok(put.status < 300, put.body);
    assert.equal((await cli(['cache', 'set', 'scheduled', '--retention', '1s'], env)).code, 0);
    // Watched in the database: reading the narinfo would be a use, which keeps it.
    let runs: Array<{ trigger: string; paths_removed: number }> = [];
    for (let i = 0; i < 100; i++) {
      runs = await server.query<{ trigger: string; paths_removed: number }>(
        sql`select trigger, paths_removed from cache_gc_runs r join caches c on c.id = r.cache_id where c.name = 'scheduled' and r.finished_at is not null`,
      );
      if (runs.some((r) => Number(r.paths_removed) === 1)) break;
      await sleep(200);
    }
    assert.ok(
      runs.some((r) => r.trigger === 'schedule' && Number(r.paths_removed) === 1),
      `a scheduled collection removed the path: ${JSON.stringify(runs)}`,
    );
    assert.equal(
      (await rawRequest(`${c.url}/${p.hashPart}.narinfo`, { headers: bearer(c.pullToken) })).status,
      404,
    );
    const info = await cli(['cache', 'info', 'scheduled'], env);
    assert.match(info.stdout, /last gc: .*\(schedule\): removed \d+ paths, freed /);
  });
});
