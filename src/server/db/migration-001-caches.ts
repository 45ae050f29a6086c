import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';
import { nameType, type SqlDialect, serialId } from './sql-types.ts';

/** Workspaces, tokens, binary caches and their path index. */
export const migration001: Migration = {
  version: 1,
  name: 'workspaces, tokens, caches and the path index',
  // Names are collated "C" on PostgreSQL (see nameType). That was added to this released
  // migration before any PostgreSQL database ran it; SQLite's tables are unchanged.
  async up(db: Kysely<unknown>, dialect: SqlDialect) {
    await db.schema
      .createTable('workspaces')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('name', nameType(dialect), (c) => c.notNull().unique())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('tokens')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('name', nameType(dialect), (c) => c.notNull())
      .addColumn('hash', 'text', (c) => c.notNull().unique())
      .addColumn('scopes', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('expires_at', 'bigint')
      .addColumn('revoked_at', 'bigint')
      .addColumn('last_used_at', 'bigint')
      .execute();
    await db.schema
      .createTable('caches')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('name', nameType(dialect), (c) => c.notNull().unique())
      .addColumn('public', 'integer', (c) => c.notNull())
      .addColumn('secret_key', 'text', (c) => c.notNull())
      .addColumn('public_key', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('nar_files')
      .addColumn('cache_id', 'integer', (c) => c.notNull().references('caches.id'))
      .addColumn('file_name', 'text', (c) => c.notNull())
      .addColumn('compression', 'text', (c) => c.notNull())
      .addColumn('file_hash', 'text', (c) => c.notNull())
      .addColumn('file_size', 'bigint', (c) => c.notNull())
      .addColumn('nar_hash', 'text', (c) => c.notNull())
      .addColumn('nar_size', 'bigint', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('nar_files_pk', ['cache_id', 'file_name'])
      .execute();
    await db.schema
      .createTable('store_paths')
      .addColumn('cache_id', 'integer', (c) => c.notNull().references('caches.id'))
      .addColumn('hash_part', 'text', (c) => c.notNull())
      .addColumn('store_path', 'text', (c) => c.notNull())
      .addColumn('nar_hash', 'text', (c) => c.notNull())
      .addColumn('nar_size', 'bigint', (c) => c.notNull())
      .addColumn('file_name', 'text', (c) => c.notNull())
      .addColumn('file_hash', 'text')
      .addColumn('file_size', 'bigint')
      .addColumn('compression', 'text', (c) => c.notNull())
      .addColumn('refs', 'text', (c) => c.notNull())
      .addColumn('deriver', 'text')
      .addColumn('system', 'text')
      .addColumn('ca', 'text')
      .addColumn('narinfo', 'text', (c) => c.notNull())
      .addColumn('uploaded_at', 'bigint', (c) => c.notNull())
      .addColumn('last_accessed_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('store_paths_pk', ['cache_id', 'hash_part'])
      .execute();
    await db.schema
      .createIndex('store_paths_file')
      .on('store_paths')
      .columns(['cache_id', 'file_name'])
      .execute();
    await db.schema
      .createTable('cache_files')
      .addColumn('cache_id', 'integer', (c) => c.notNull().references('caches.id'))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('size', 'bigint', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('cache_files_pk', ['cache_id', 'name'])
      .execute();
  },
};
