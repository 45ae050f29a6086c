import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatPublicKey, formatSecretKey, generateSecretKey } from '../../src/nix/signing-key.ts';
import { LocalBlobStore } from '../../src/server/blob/local-blob-store.ts';
import { BinaryCache, type ResolvedCache } from '../../src/server/cache/binary-cache.ts';
import { CacheGcRepository } from '../../src/server/db/cache-gc-repository.ts';
import { CacheRepository } from '../../src/server/db/cache-repository.ts';
import { migrate } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { PathIndex } from '../../src/server/db/path-index.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/server.ts';

/**
 * A narinfo read from the database racing one of the collector's removal batches, on the test's
 * database (SQLite, or PostgreSQL with CAIRN_TEST_DATABASE_URL, where a read takes no lock and
 * the race is real). A read under way when a batch begins must have been noted as a fetch before
 * the batch checks what was used; a read that begins during a batch must see its outcome. The
 * end-to-end case (a `nix copy` during a collection) is in cache-gc-uploads.test.ts; this one
 * holds the two in the order that used to lose a path.
 */
describe('the collector and reads of narinfos from the database', () => {
  let testDb: TestDatabase;
  let database: OpenDatabase;
  let blobDir: string;
  let cache: BinaryCache;
  let gc: CacheGcRepository;
  let resolved: ResolvedCache;
  let n = 0;

  /** Publishes a path straight into the index (the narinfo's checks are not what is tested). */
  const publish = async (): Promise<string> => {
    const hashPart = `${'abcdfghijklmnpqrsvwxyz0123456789'.slice(n % 10)}${'0'.repeat(32)}`.slice(0, 32);
    n++;
    const storePath = `/nix/store/${hashPart}-race-${n}`;
    const fileName = `${'1'.repeat(52)}.nar`;
    await new PathIndex(database.db).insertStorePath({
      cache_id: resolved.id,
      hash_part: hashPart,
      store_path: storePath,
      nar_hash: `sha256:${'1'.repeat(52)}`,
      nar_size: 120,
      file_name: fileName,
      file_hash: null,
      file_size: null,
      compression: 'none',
      refs: '',
      deriver: null,
      system: null,
      ca: null,
      narinfo: [
        `StorePath: ${storePath}`,
        `URL: nar/${fileName}`,
        'Compression: none',
        `NarHash: sha256:${'1'.repeat(52)}`,
        'NarSize: 120',
        'References: ',
        '',
      ].join('\n'),
      uploaded_at: 1,
      last_accessed_at: 1,
    });
    return hashPart;
  };

  before(async () => {
    testDb = await createTestDatabase();
    database = openDatabase(testDb.config);
    await migrate(database.db as never, database.dialect);
    const ws = await database.db
      .insertInto('workspaces')
      .values({ name: 'w', created_at: 1 })
      .returning('id')
      .executeTakeFirstOrThrow();
    const key = generateSecretKey('race-1');
    const caches = new CacheRepository(database.db);
    await caches.create({
      workspace_id: ws.id,
      name: 'race',
      public: 1,
      secret_key: formatSecretKey(key),
      public_key: formatPublicKey(key.publicKey),
      created_at: 1,
    });
    blobDir = await mkdtemp(join(tmpdir(), 'cairn-race-blobs-'));
    gc = new CacheGcRepository(database.db, database.dialect);
    cache = new BinaryCache({
      caches,
      index: new PathIndex(database.db),
      blobs: new LocalBlobStore(blobDir),
      now: Date.now,
      maxNarBytes: 1 << 20,
      locks: gc,
    });
    const r = await cache.resolve('race');
    assert.ok(r);
    resolved = r;
  });
  after(async () => {
    await database?.db.destroy();
    await testDb?.drop();
    if (blobDir) await rm(blobDir, { recursive: true, force: true });
  });

  it('a batch that begins while a read is under way sees that read as a fetch', async () => {
    const hashPart = await publish();
    const read = cache.narinfo(resolved, hashPart);
    // The batch starts before the read has its answer from the database.
    const seen = await cache.whileNotRead(resolved.id, async () => [...cache.touchedHashParts(resolved.id)]);
    assert.ok(seen.includes(hashPart), `the batch saw the fetch of ${hashPart}: ${JSON.stringify(seen)}`);
    assert.match((await read) ?? '', /^StorePath: /);
  });

  it('a read that begins during a batch answers with what the batch left: a removed path is not found', async () => {
    const hashPart = await publish();
    let readDuring: Promise<string | undefined> | undefined;
    await cache.whileNotRead(resolved.id, () =>
      gc.withCacheLock(resolved.id, 'exclusive', async (trx) => {
        // Asked for after the batch's check and before its commit.
        readDuring = cache.narinfo(resolved, hashPart);
        await gc.deletePaths(trx, resolved.id, [hashPart]);
        // Long enough for a read that did not wait to have its answer from the database.
        await new Promise((r) => setTimeout(r, 200));
      }),
    );
    assert.equal(await readDuring, undefined, 'the narinfo removed by the batch is not served');
    assert.equal(await cache.narinfo(resolved, hashPart), undefined);
  });

  it('batches of one cache run one at a time, and reads of other caches do not wait', async () => {
    const order: string[] = [];
    const first = cache.whileNotRead(resolved.id, async () => {
      order.push('first begins');
      await new Promise((r) => setTimeout(r, 100));
      order.push('first ends');
    });
    const second = cache.whileNotRead(resolved.id, async () => {
      order.push('second begins');
    });
    // Another cache id: nothing of this cache holds it up.
    await cache.whileNotRead(resolved.id + 1000, async () => order.push('other cache'));
    await Promise.all([first, second]);
    assert.deepEqual(order, ['first begins', 'other cache', 'first ends', 'second begins']);
  });
});
