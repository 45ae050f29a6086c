import { type DialectAdapter, SqliteAdapter, SqliteDialect } from 'kysely';

/**
 * Kysely's SQLite dialect, declaring that SQLite runs schema changes inside a transaction (it
 * does). Kysely's own adapter says it does not, because `PRAGMA foreign_keys` is silently ignored
 * inside one (kysely-org/kysely#56), and so its Migrator would run each migration unguarded: one
 * failing halfway would leave half a schema. Cairn's migrations never touch that pragma, so with
 * this adapter Kysely's Migrator applies all pending migrations in one transaction on SQLite too,
 * as it does on PostgreSQL.
 */
export class TransactionalSqliteDialect extends SqliteDialect {
  override createAdapter(): DialectAdapter {
    return new TransactionalDdlSqliteAdapter();
  }
}

class TransactionalDdlSqliteAdapter extends SqliteAdapter {
  override get supportsTransactionalDdl(): boolean {
    return true;
  }
}
