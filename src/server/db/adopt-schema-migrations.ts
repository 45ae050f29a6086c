import { type Kysely, sql } from 'kysely';
import type { SqlDialect } from './sql-types.ts';

/** A row of `schema_migrations`, where Cairn before Kysely's Migrator recorded what ran. */
export interface SchemaMigrationRow {
  readonly version: number;
  readonly name: string;
}

/**
 * The version of the row that fences `schema_migrations` off once adopted. A Cairn from before
 * the move reads only that table: without the fence it would see its own migrations done and run
 * on a schema newer than it knows; with it, it stops with "its schema version 1000000 is newer
 * than this Cairn knows ...; upgrade Cairn".
 */
export const SCHEMA_MIGRATIONS_FENCE = 1_000_000;

/** Arbitrary key of the PostgreSQL advisory lock held while adopting (the old migrator's). */
const LOCK = 0x636169726e;

/**
 * Copies what a database created before Cairn used Kysely's Migrator records in
 * `schema_migrations` into Kysely's `kysely_migration`, named by `nameOf`, once: only when the
 * first exists and the second does not. Replicas starting at once take turns (PostgreSQL).
 */
export async function adoptSchemaMigrations(
  db: Kysely<unknown>,
  dialect: SqlDialect,
  nameOf: (row: SchemaMigrationRow) => string,
): Promise<void> {
  await (db as Kysely<BookkeepingTables>).transaction().execute(async (trx) => {
    if (dialect === 'postgres') await sql`select pg_advisory_xact_lock(${LOCK})`.execute(trx);
    const tables = new Set(
      (await trx.introspection.getTables({ withInternalKyselyTables: true })).map((t) => t.name),
    );
    if (!tables.has('schema_migrations') || tables.has('kysely_migration')) return;
    // The same table Kysely's Migrator creates when it finds none.
    await trx.schema
      .createTable('kysely_migration')
      .addColumn('name', 'varchar(255)', (c) => c.notNull().primaryKey())
      .addColumn('timestamp', 'varchar(255)', (c) => c.notNull())
      .execute();
    const rows = await trx
      .selectFrom('schema_migrations')
      .select(['version', 'name', 'applied_at'])
      .where('version', '<', SCHEMA_MIGRATIONS_FENCE)
      .orderBy('version')
      .execute();
    // Kysely reads the order migrations ran in from their timestamps and refuses one out of
    // order: a clock stepped back between two starts must not reorder them.
    let latest = 0;
    for (const row of rows) {
      latest = Math.max(latest, Number(row.applied_at));
      await trx
        .insertInto('kysely_migration')
        .values({
          name: nameOf({ version: Number(row.version), name: row.name }),
          timestamp: new Date(latest).toISOString(),
        })
        .execute();
    }
    await trx
      .insertInto('schema_migrations')
      .values({ version: SCHEMA_MIGRATIONS_FENCE, name: 'moved to kysely_migration', applied_at: Date.now() })
      .execute();
  });
}

interface BookkeepingTables {
  schema_migrations: { version: number; name: string; applied_at: number };
  kysely_migration: { name: string; timestamp: string };
}
