import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Migrator, sql } from 'kysely';
import { isCairnError } from '../../src/lib/cairn-error.ts';
import { encodeNix32 } from '../../src/nix/nix32.ts';
import { SCHEMA_MIGRATIONS_FENCE } from '../../src/server/db/adopt-schema-migrations.ts';
import { CacheRepository } from '../../src/server/db/cache-repository.ts';
import type { StorePathsTable } from '../../src/server/db/database-schema.ts';
import { migrate, migrationName, migrations } from '../../src/server/db/migrations.ts';
import { type OpenDatabase, openDatabase } from '../../src/server/db/open-database.ts';
import { PathIndex } from '../../src/server/db/path-index.ts';
import { TokenRepository } from '../../src/server/db/token-repository.ts';
import { WorkspaceRepository } from '../../src/server/db/workspace-repository.ts';
import { legacyMigrate } from '../helpers/legacy-migrate.ts';
import { createTestDatabase, type TestDatabase, testPostgresUrl } from '../helpers/server.ts';

// The same tests run on SQLite and, with CAIRN_TEST_DATABASE_URL set, on PostgreSQL.
const kind = testPostgresUrl() === undefined ? 'sqlite' : 'postgres';
const newest = migrations.at(-1)!.version;
const now = () => 1_700_000_000_000;

/** A fresh empty database, opened; `close` destroys the pool and drops the database. */
async function freshDatabase(): Promise<OpenDatabase & { close(): Promise<void>; test: TestDatabase }> {
  const test = await createTestDatabase();
  const open = openDatabase(test.config);
  return {
    ...open,
    test,
    close: async () => {
      await open.db.destroy();
      await test.drop();
    },
  };
}

/** The names of the migrations the database records as run, in order. */
async function recorded(database: OpenDatabase): Promise<string[]> {
  const rows = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(
    database.db,
  );
  return rows.rows.map((r) => r.name);
}

/** A distinct valid-looking store path hash part for each number. */
function hashPart(n: number): string {
  return encodeNix32(createHash('sha256').update(String(n)).digest().subarray(0, 20));
}

function storePathRow(cacheId: number, n: number, narSize: number): StorePathsTable {
  const hash = hashPart(n);
  return {
    cache_id: cacheId,
    hash_part: hash,
    store_path: `/nix/store/${hash}-pkg-${n}`,
    nar_hash: `sha256:${'0'.repeat(52)}`,
    nar_size: narSize,
    file_name: `${hash}.nar.xz`,
    file_hash: null,
    file_size: Math.floor(narSize / 2),
    compression: 'xz',
    refs: '',
    deriver: null,
    system: null,
    ca: null,
    narinfo: `StorePath: /nix/store/${hash}-pkg-${n}\n`,
    uploaded_at: now(),
    last_accessed_at: now(),
  };
}

describe(`database on ${kind}`, () => {
  let database: Awaited<ReturnType<typeof freshDatabase>>;
  let workspaceId: number;
  before(async () => {
    database = await freshDatabase();
  });
  after(() => database?.close());

  it('migrate applies every migration on a fresh database, and nothing the second time', async () => {
    assert.deepEqual(
      await migrate(database.db as never, database.dialect),
      migrations.map((m) => m.version),
    );
    assert.deepEqual(await migrate(database.db as never, database.dialect), []);
    assert.deepEqual(await recorded(database), migrations.map(migrationName));
    workspaceId = (await new WorkspaceRepository(database.db).ensure('default', now())).id;
    assert.deepEqual(await new WorkspaceRepository(database.db).ensure('default', now()), {
      id: workspaceId,
      created: false,
    });
  });

  it('migrate from two connections at once applies each migration exactly once', {
    skip: kind === 'sqlite' && 'SQLite is one process on one file: no replicas race to migrate it',
  }, async () => {
    const test = await createTestDatabase();
    const a = openDatabase(test.config);
    const b = openDatabase(test.config);
    try {
      const results = await Promise.all([
        migrate(a.db as never, a.dialect),
        migrate(b.db as never, b.dialect),
      ]);
      assert.deepEqual(results.map((r) => r.length).sort(), [0, migrations.length]);
    } finally {
      await a.db.destroy();
      await b.db.destroy();
      await test.drop();
    }
  });

  it('migrate refuses a database whose schema is newer than this Cairn knows', async () => {
    const other = await freshDatabase();
    try {
      await migrate(other.db as never, other.dialect);
      const future = migrationName({ version: newest + 1, name: 'from the future' });
      await sql`insert into kysely_migration (name, timestamp) values (${future}, ${new Date().toISOString()})`.execute(
        other.db,
      );
      await assert.rejects(
        migrate(other.db as never, other.dialect),
        (err) =>
          isCairnError(err, 'INVALID_ARGUMENT') &&
          err.message.includes(`schema version ${newest + 1} is newer than this Cairn knows (${newest})`),
      );
      // Refused before touching anything: the future row is still the only addition.
      assert.equal((await recorded(other)).length, migrations.length + 1);
    } finally {
      await other.close();
    }
  });

  it('migrate adopts a database migrated before Kysely, and the older Cairn then refuses it', async () => {
    const old = await freshDatabase();
    try {
      // As the previous Cairn left it: migrations 1 to 3 recorded in schema_migrations, some data.
      assert.deepEqual(await legacyMigrate(old.db as never, old.dialect, { now, upTo: 3 }), [1, 2, 3]);
      const { id } = await new WorkspaceRepository(old.db).ensure('kept', now());
      assert.deepEqual(
        await migrate(old.db as never, old.dialect),
        migrations.filter((m) => m.version > 3).map((m) => m.version),
      );
      assert.deepEqual(await recorded(old), migrations.map(migrationName));
      assert.deepEqual(await migrate(old.db as never, old.dialect), []);
      assert.deepEqual(await new WorkspaceRepository(old.db).ensure('kept', now()), { id, created: false });
      // The previous Cairn would see its own migrations done: the fence row stops it.
      await assert.rejects(
        legacyMigrate(old.db as never, old.dialect, { now }),
        (err) =>
          isCairnError(err, 'INVALID_ARGUMENT') &&
          err.message.includes(
            `schema version ${SCHEMA_MIGRATIONS_FENCE} is newer than this Cairn knows (${newest})`,
          ),
      );
    } finally {
      await old.close();
    }
  });

  it('migrate refuses a database migrated before Kysely that records a newer version', async () => {
    const old = await freshDatabase();
    try {
      await legacyMigrate(old.db as never, old.dialect, { now });
      await sql`insert into schema_migrations (version, name, applied_at) values (${newest + 1}, ${'from the future'}, ${now()})`.execute(
        old.db,
      );
      await assert.rejects(
        migrate(old.db as never, old.dialect),
        (err) =>
          isCairnError(err, 'INVALID_ARGUMENT') &&
          err.message.includes(`schema version ${newest + 1} is newer than this Cairn knows (${newest})`),
      );
    } finally {
      await old.close();
    }
  });

  it('migrate from two connections at once adopts a database migrated before Kysely once', {
    skip: kind === 'sqlite' && 'SQLite is one process on one file: no replicas race to migrate it',
  }, async () => {
    const test = await createTestDatabase();
    const a = openDatabase(test.config);
    const b = openDatabase(test.config);
    try {
      await legacyMigrate(a.db as never, a.dialect, { now, upTo: 3 });
      const results = await Promise.all([
        migrate(a.db as never, a.dialect),
        migrate(b.db as never, b.dialect),
      ]);
      assert.deepEqual(results.map((r) => r.length).sort(), [0, migrations.length - 3]);
      assert.deepEqual(await recorded(a), migrations.map(migrationName));
    } finally {
      await a.db.destroy();
      await b.db.destroy();
      await test.drop();
    }
  });

  it('a migration run that fails halfway leaves the schema as it was (one transaction)', async () => {
    const other = await freshDatabase();
    try {
      // Kysely's Migrator, as migrate uses it, over this database's dialect.
      const { error } = await new Migrator({
        db: other.db,
        provider: {
          getMigrations: async () => ({
            '0001 first': { up: (db) => db.schema.createTable('first').addColumn('x', 'integer').execute() },
            '0002 broken': { up: async (db) => void (await sql`select * from no_such_table`.execute(db)) },
          }),
        },
      }).migrateToLatest();
      assert.ok(error, 'the broken migration fails');
      const tables = (await other.db.introspection.getTables()).map((t) => t.name);
      assert.equal(tables.includes('first'), false, 'the first migration was rolled back with it');
      assert.deepEqual(await recorded(other), []);
    } finally {
      await other.close();
    }
  });

  it('tokens: create, find by hash, list, touch, and revoke once by id or by name', async () => {
    const tokens = new TokenRepository(database.db);
    const base = { workspaceId, scopes: ['admin'], createdAt: now(), expiresAt: null };
    const a = await tokens.create({ ...base, name: 'a', hash: 'hash-a' });
    const b = await tokens.create({ ...base, name: 'b', hash: 'hash-b', expiresAt: now() + 1 });
    const found = await tokens.findByHash('hash-a');
    assert.equal(found?.id, a);
    assert.deepEqual(JSON.parse(found!.scopes), ['admin']);
    // Millisecond timestamps need int8; they must come back as numbers, not strings.
    assert.equal(found?.created_at, now());
    assert.equal((await tokens.findByHash('hash-b'))?.expires_at, now() + 1);
    assert.equal(await tokens.findByHash('hash-none'), undefined);

    await tokens.touch(a, now() + 5);
    assert.equal((await tokens.findByHash('hash-a'))?.last_used_at, now() + 5);

    assert.deepEqual(await tokens.revoke(workspaceId, a, now() + 7), [a]);
    assert.deepEqual(await tokens.revoke(workspaceId, a, now() + 8), [], 'already revoked');
    assert.deepEqual(await tokens.revoke(workspaceId + 1, 'b', now()), [], 'other workspace');
    assert.deepEqual(await tokens.revoke(workspaceId, 'b', now() + 9), [b]);
    assert.deepEqual(await tokens.revoke(workspaceId, 'nobody', now()), []);
    // Same created_at: the order is still the same on every database.
    const listed = await tokens.list(workspaceId);
    assert.deepEqual(
      listed.map((t) => [t.name, t.revoked_at]),
      [
        ['a', now() + 7],
        ['b', now() + 9],
      ],
    );
    assert.equal('hash' in listed[0]!, false, 'list never returns hashes');
  });

  it('caches: create returns the new id, undefined for a taken name; lists by byte order', async () => {
    const caches = new CacheRepository(database.db);
    const row = {
      workspace_id: workspaceId,
      public: 0,
      secret_key: 'k:secret',
      public_key: 'k:public',
      created_at: now(),
    };
    const ab = await caches.create({ ...row, name: 'ab' });
    assert.equal(typeof ab?.id, 'number');
    assert.equal(await caches.create({ ...row, name: 'ab', public: 1 }), undefined);
    const ac = await caches.create({ ...row, name: 'a-c' });
    assert.notEqual(ac?.id, ab?.id);
    assert.deepEqual(await caches.byName('ab'), ab);
    assert.equal(await caches.byName('zz'), undefined);
    // SQLite compares bytes; PostgreSQL must too ('-' sorts before letters), whatever its locale.
    assert.deepEqual(
      (await caches.list(workspaceId)).map((c) => c.name),
      ['a-c', 'ab'],
    );
    if (kind === 'postgres') {
      const collation = await sql<{ collation_name: string | null }>`
        select collation_name from information_schema.columns
        where table_name = 'caches' and column_name = 'name'`.execute(database.db);
      assert.equal(collation.rows[0]?.collation_name, 'C');
    }
  });

  it('path index: inserts a path once, finds a batch of more than 500 hash parts, sums sizes as numbers', async () => {
    const caches = new CacheRepository(database.db);
    const index = new PathIndex(database.db);
    const cache = (await caches.byName('ab'))!;
    const empty = (await caches.byName('a-c'))!;
    // Sizes beyond 2^32 need int8 and must come back exactly, as numbers.
    const big = 5 * 1024 ** 3 + 7;
    // Every 20th of the 1200 asked below: some in each chunk of 500 the lookup is split into.
    const held = Array.from({ length: 60 }, (_, i) => i * 20);
    for (const n of held) assert.equal(await index.insertStorePath(storePathRow(cache.id, n, big)), true);
    assert.equal(await index.insertStorePath(storePathRow(cache.id, 0, 1)), false, 'already published');
    assert.equal((await index.storePath(cache.id, hashPart(0)))?.nar_size, big);

    const asked = Array.from({ length: 1200 }, (_, i) => hashPart(i));
    const present = await index.existingHashParts(cache.id, asked);
    assert.equal(present.size, held.length);
    assert.ok(held.every((n) => present.has(hashPart(n))));
    assert.equal((await index.existingHashParts(empty.id, asked)).size, 0);
    assert.equal((await index.existingHashParts(cache.id, [])).size, 0);

    const stats = await caches.stats([cache.id, empty.id]);
    assert.deepEqual(stats.get(cache.id), {
      paths: held.length,
      narBytes: held.length * big,
      fileBytes: held.length * Math.floor(big / 2),
    });
    assert.equal(stats.has(empty.id), false);
  });

  it("path index: a fetch recorded moves a path's last access forward, never back, and only its own", async () => {
    const index = new PathIndex(database.db);
    const cache = (await new CacheRepository(database.db).byName('a-c'))!;
    // 1,200 paths, so that the hash parts recorded are split into chunks of 500.
    const rows = Array.from({ length: 1200 }, (_, i) => ({
      ...storePathRow(cache.id, 5000 + i, 1),
      last_accessed_at: 1000,
    }));
    for (const r of rows) await index.insertStorePath(r);
    const fetched = rows.filter((_, i) => i % 2 === 0).map((r) => r.hash_part);
    await index.touchMany(cache.id, [
      [2000, fetched.slice(0, 300)],
      [500, fetched.slice(300)],
    ]);
    const at = async (h: string) => (await index.storePath(cache.id, h))?.last_accessed_at;
    assert.equal(await at(fetched[0]!), 2000, 'moved forward');
    assert.equal(await at(fetched[299]!), 2000);
    assert.equal(await at(fetched[300]!), 1000, 'an earlier fetch does not move it back');
    assert.equal(await at(fetched.at(-1)!), 1000);
    assert.equal(await at(rows[1]!.hash_part), 1000, 'a path not fetched is left alone');
    assert.equal(await at(rows[1199]!.hash_part), 1000);
  });

  it('path index: a NAR file record is replaced on re-upload and deleted when asked', async () => {
    const index = new PathIndex(database.db);
    const cache = (await new CacheRepository(database.db).byName('ab'))!;
    const file = {
      cache_id: cache.id,
      file_name: `${hashPart(0)}.nar.xz`,
      compression: 'xz',
      file_hash: 'sha256:one',
      file_size: 10,
      nar_hash: 'sha256:nar',
      nar_size: 20,
      created_at: now(),
    };
    await index.putNarFile(file);
    await index.putNarFile({ ...file, file_hash: 'sha256:two', file_size: 2 ** 40 });
    assert.deepEqual(await index.narFile(cache.id, file.file_name), {
      ...file,
      file_hash: 'sha256:two',
      file_size: 2 ** 40,
    });
    assert.equal(await index.narFileInUse(cache.id, file.file_name), true);
    assert.equal(await index.narFileInUse(cache.id, 'other.nar'), false);
    await index.deleteNarFile(cache.id, file.file_name);
    assert.equal(await index.narFile(cache.id, file.file_name), undefined);
  });

  it('refuses text containing NUL the same way on every database', async () => {
    const tokens = new TokenRepository(database.db);
    await assert.rejects(
      tokens.create({
        workspaceId,
        name: 'a\0b',
        hash: 'hash-nul',
        scopes: [],
        createdAt: now(),
        expiresAt: null,
      }),
      (err) => isCairnError(err, 'INVALID_ARGUMENT'),
    );
    await assert.rejects(new CacheRepository(database.db).byName('a\0b'), (err) =>
      isCairnError(err, 'INVALID_ARGUMENT'),
    );
    await assert.rejects(new PathIndex(database.db).existingHashParts(1, ['fine', 'not\0fine']), (err) =>
      isCairnError(err, 'INVALID_ARGUMENT'),
    );
  });

  it('matches nothing with an empty IN list, where PostgreSQL alone would fail', async () => {
    assert.deepEqual(await database.db.selectFrom('caches').select('id').where('id', 'in', []).execute(), []);
  });

  it('survives PostgreSQL closing its idle connections', {
    skip: kind === 'sqlite' && 'SQLite has no connections to lose',
  }, async () => {
    const test = await createTestDatabase();
    const errors: Error[] = [];
    const open = openDatabase(test.config, { onIdleConnectionError: (err) => errors.push(err) });
    const killer = openDatabase(test.config);
    try {
      await sql`select 1`.execute(open.db);
      // As a PostgreSQL restart or a proxy's idle timeout would: the pool's connection is idle.
      await sql`select pg_terminate_backend(pid) from pg_stat_activity
        where datname = current_database() and pid <> pg_backend_pid()`.execute(killer.db);
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(errors.length, 1);
      const { rows } = await sql<{ one: number }>`select 1 as one`.execute(open.db);
      assert.deepEqual(rows, [{ one: 1 }]);
    } finally {
      await open.db.destroy();
      await killer.db.destroy();
      await test.drop();
    }
  });
});
