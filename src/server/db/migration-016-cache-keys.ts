import { type Kysely, sql } from 'kysely';
import type { Migration } from './migrations.ts';
import { serialId } from './sql-types.ts';

/**
 * Signing keys of caches, several per cache, so that a key can be rotated without a flag day:
 * while a cache has two active keys every narinfo it serves carries a signature by each, and a
 * machine trusting either accepts it. A retired key keeps its row, with its secret erased, so
 * that signatures by it are stripped from the narinfos stored before it was retired.
 * `caches.secret_key` and `caches.public_key` keep naming the newest active key (what
 * `cache create` printed, and what agents are told). Each cache's key so far becomes its first row.
 */
export const migration016: Migration = {
  version: 16,
  name: 'cache keys',
  async up(db: Kysely<unknown>, dialect) {
    await db.schema
      .createTable('cache_keys')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('cache_id', 'integer', (c) => c.notNull().references('caches.id'))
      // The key's name, as in `name:base64`: what a narinfo's Sig and trusted-public-keys say.
      .addColumn('name', 'text', (c) => c.notNull())
      // Empty once retired: a retired key signs nothing again.
      .addColumn('secret_key', 'text', (c) => c.notNull())
      .addColumn('public_key', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('retired_at', 'bigint')
      .addUniqueConstraint('cache_keys_cache_name', ['cache_id', 'name'])
      .execute();
    const caches = await sql<{
      id: number;
      secret_key: string;
      public_key: string;
      created_at: number;
    }>`select id, secret_key, public_key, created_at from caches`.execute(db);
    for (const c of caches.rows) {
      const name = c.public_key.slice(0, c.public_key.indexOf(':'));
      await sql`insert into cache_keys (cache_id, name, secret_key, public_key, created_at)
        values (${c.id}, ${name}, ${c.secret_key}, ${c.public_key}, ${Number(c.created_at)})`.execute(db);
    }
  },
};
