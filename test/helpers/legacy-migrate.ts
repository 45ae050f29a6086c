import { type Kysely, sql } from 'kysely';
import { CairnError } from '../../src/lib/cairn-error.ts';
import { migrations, type SqlDialect } from '../../src/server/db/migrations.ts';

/**
 * How Cairn migrated before it used Kysely's Migrator (src/server/db/migrations.ts at 0a9ce5e),
 * kept to build the databases that Cairn left behind and to play the older Cairn that may meet
 * a database migrated since: bookkeeping in `schema_migrations (version, name, applied_at)`,
 * one transaction per migration, and a refusal of versions it does not know. Applies the
 * migrations up to `upTo` (all by default); returns the versions applied.
 */
export async function legacyMigrate(
  db: Kysely<unknown>,
  dialect: SqlDialect,
  options: { now: () => number; upTo?: number },
): Promise<number[]> {
  const known = migrations.filter((m) => m.version <= (options.upTo ?? Number.POSITIVE_INFINITY));
  await db.schema
    .createTable('schema_migrations')
    .ifNotExists()
    .addColumn('version', 'integer', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('applied_at', 'bigint', (c) => c.notNull())
    .execute();
  const rows = await sql<{ version: number }>`select version from schema_migrations`.execute(db);
  const done = new Set(rows.rows.map((r) => Number(r.version)));
  const newest = known.at(-1)?.version ?? 0;
  const unknown = [...done].filter((v) => v > newest);
  if (unknown.length > 0) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use the database: its schema version ${Math.max(...unknown)} is newer than this Cairn knows (${newest}); upgrade Cairn`,
    );
  }
  const applied: number[] = [];
  for (const m of known) {
    if (done.has(m.version)) continue;
    await db.transaction().execute(async (trx) => {
      await m.up(trx, dialect);
      await sql`insert into schema_migrations (version, name, applied_at) values (${m.version}, ${m.name}, ${options.now()})`.execute(
        trx,
      );
    });
    applied.push(m.version);
  }
  return applied;
}
