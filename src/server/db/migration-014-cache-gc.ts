import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';
import { type SqlDialect, serialId } from './sql-types.ts';

/**
 * The cache over months: per-cache retention and quota (null: the server's default retention,
 * no quota), pins that the collector never removes, a record of every collection, and a lease so
 * that one replica at a time collects a cache. `store_paths.last_accessed_at` (migration 001) is
 * kept current by the server from now on; the index on it serves the quota's least recently used
 * order.
 */
export const migration014: Migration = {
  version: 14,
  name: 'cache garbage collection',
  async up(db: Kysely<unknown>, dialect: SqlDialect) {
    await db.schema.alterTable('caches').addColumn('retention_seconds', 'bigint').execute();
    await db.schema.alterTable('caches').addColumn('quota_bytes', 'bigint').execute();
    await db.schema.alterTable('caches').addColumn('gc_lease_holder', 'text').execute();
    await db.schema.alterTable('caches').addColumn('gc_lease_until', 'bigint').execute();
    await db.schema
      .createIndex('store_paths_last_accessed')
      .on('store_paths')
      .columns(['cache_id', 'last_accessed_at'])
      .execute();
    await db.schema
      .createTable('cache_pins')
      .addColumn('cache_id', 'integer', (c) => c.notNull().references('caches.id'))
      .addColumn('hash_part', 'text', (c) => c.notNull())
      .addColumn('store_path', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('created_by', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'bigint')
      .addPrimaryKeyConstraint('cache_pins_pk', ['cache_id', 'hash_part'])
      .execute();
    await db.schema
      .createTable('cache_gc_runs')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('cache_id', 'integer', (c) => c.notNull().references('caches.id'))
      .addColumn('trigger', 'text', (c) => c.notNull())
      .addColumn('started_at', 'bigint', (c) => c.notNull())
      .addColumn('finished_at', 'bigint')
      .addColumn('paths_removed', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('nar_files_removed', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('bytes_freed', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('error', 'text')
      .execute();
    await db.schema
      .createIndex('cache_gc_runs_cache')
      .on('cache_gc_runs')
      .columns(['cache_id', 'id'])
      .execute();
  },
};
