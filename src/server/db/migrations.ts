import { type Kysely, sql } from 'kysely';
import { CairnError } from '../../lib/cairn-error.ts';
import { migration002 } from './migration-002-deployments.ts';
import { migration003 } from './migration-003-safety.ts';
import { migration004 } from './migration-004-closures.ts';
import { migration005 } from './migration-005-audit.ts';
import { migration006 } from './migration-006-server-identity.ts';
import { nameType, type SqlDialect, serialId } from './sql-types.ts';

/** One schema change. Released migrations are never edited; a change is a new migration. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  up(db: Kysely<unknown>, dialect: SqlDialect): Promise<void>;
}

export type { SqlDialect } from './sql-types.ts';

/**
 * Every migration, in order. Written with Kysely's schema builder and portable types only
 * (integer, bigint, text), so that one list serves SQLite and PostgreSQL.
 */
export const migrations: readonly Migration[] = [
  {
    version: 1,
    name: 'workspaces, tokens, caches and the path index',
    // Names are collated "C" on PostgreSQL (see nameType). That was added to this released
    // migration before any PostgreSQL database ran it; SQLite's tables are unchanged.
    async up(db, dialect) {
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
  },
  migration002,
  migration003,
  migration004,
  migration005,
  migration006,
];

/**
 * Brings the database up to the newest migration, each in its own transaction, and returns
 * the versions applied. Refuses a database written by a newer Cairn.
 */
export async function migrate(
  db: Kysely<unknown>,
  dialect: SqlDialect,
  now: () => number,
): Promise<number[]> {
  if (dialect === 'postgres') {
    // Several replicas may start at once: one migrates, the others wait for it.
    return await db.connection().execute(async (conn) => {
      await sql`select pg_advisory_lock(${MIGRATION_LOCK})`.execute(conn);
      try {
        return await migrateLocked(conn, dialect, now);
      } finally {
        await sql`select pg_advisory_unlock(${MIGRATION_LOCK})`.execute(conn);
      }
    });
  }
  return await migrateLocked(db, dialect, now);
}

/** Arbitrary key of the PostgreSQL advisory lock held while migrating. */
const MIGRATION_LOCK = 0x636169726e;

async function migrateLocked(db: Kysely<unknown>, dialect: SqlDialect, now: () => number): Promise<number[]> {
  await db.schema
    .createTable('schema_migrations')
    .ifNotExists()
    .addColumn('version', 'integer', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('applied_at', 'bigint', (c) => c.notNull())
    .execute();
  const rows = await sql<{ version: number }>`select version from schema_migrations`.execute(db);
  const done = new Set(rows.rows.map((r) => Number(r.version)));
  const newest = migrations.at(-1)?.version ?? 0;
  const unknown = [...done].filter((v) => v > newest);
  if (unknown.length > 0) {
    // Running older code on a newer schema would corrupt it quietly; stop before touching it.
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use the database: its schema version ${Math.max(...unknown)} is newer than this Cairn knows (${newest}); upgrade Cairn`,
    );
  }
  const applied: number[] = [];
  for (const m of migrations) {
    if (done.has(m.version)) continue;
    await db.transaction().execute(async (trx) => {
      await m.up(trx, dialect);
      await sql`insert into schema_migrations (version, name, applied_at) values (${m.version}, ${m.name}, ${now()})`.execute(
        trx,
      );
    });
    applied.push(m.version);
  }
  return applied;
}
