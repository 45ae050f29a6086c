import { type ColumnDefinitionBuilder, type Expression, sql } from 'kysely';

/** The SQL databases Cairn runs on. */
export type SqlDialect = 'sqlite' | 'postgres';

/** An auto-numbered integer primary key, spelled as each database wants it. */
export function serialId(dialect: SqlDialect) {
  return (c: ColumnDefinitionBuilder) =>
    dialect === 'sqlite' ? c.primaryKey().autoIncrement() : c.primaryKey().generatedByDefaultAsIdentity();
}

/**
 * The type of a name that lists are sorted by. PostgreSQL sorts text by the database's locale,
 * where `en_US` ignores punctuation (`ab` before `a-c`); the "C" collation compares bytes, as
 * SQLite does, so that both list the same things in the same order. Use it for every name a
 * query orders by.
 */
export function nameType(dialect: SqlDialect): 'text' | Expression<unknown> {
  return dialect === 'sqlite' ? 'text' : sql`text collate "C"`;
}
