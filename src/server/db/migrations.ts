import { type Kysely, type Migration as KyselyMigration, Migrator } from 'kysely';
import { CairnError } from '../../lib/cairn-error.ts';
import { adoptSchemaMigrations } from './adopt-schema-migrations.ts';
import { migration001 } from './migration-001-caches.ts';
import { migration002 } from './migration-002-deployments.ts';
import { migration003 } from './migration-003-safety.ts';
import { migration004 } from './migration-004-closures.ts';
import { migration005 } from './migration-005-audit.ts';
import { migration006 } from './migration-006-server-identity.ts';
import { migration007 } from './migration-007-closure-size-index.ts';
import { migration008 } from './migration-008-agent-tags.ts';
import { migration009 } from './migration-009-staged-rollouts.ts';
import { migration010 } from './migration-010-log-sources.ts';
import { migration011 } from './migration-011-agent-connection-epoch.ts';
import { migration012 } from './migration-012-replica-leases.ts';
import { migration013 } from './migration-013-webhooks.ts';
import { migration014 } from './migration-014-cache-gc.ts';
import { migration015 } from './migration-015-enrol-tokens.ts';
import { migration016 } from './migration-016-cache-keys.ts';
import { migration017 } from './migration-017-closures-per-agent.ts';
import { migration018 } from './migration-018-enrol-keys.ts';
import { migration019 } from './migration-019-plan-requests.ts';
import type { SqlDialect } from './sql-types.ts';

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
  migration001,
  migration002,
  migration003,
  migration004,
  migration005,
  migration006,
  migration007,
  migration008,
  migration009,
  migration010,
  migration011,
  migration012,
  migration013,
  migration014,
  migration015,
  migration016,
  migration017,
  migration018,
  migration019,
];

/**
 * The name a migration is recorded under in `kysely_migration`, such as `0005 audit log`.
 * Kysely runs migrations in the order of their names, so the version leads, zero-padded.
 */
export function migrationName(m: Pick<Migration, 'version' | 'name'>): string {
  return `${String(m.version).padStart(4, '0')} ${m.name}`;
}

/**
 * Brings the database up to the newest migration and returns the versions applied. Kysely's
 * Migrator does the work: one lock across replicas, all pending migrations in one transaction,
 * and a refusal of a database that records a migration this Cairn does not know, that is, one
 * written by a newer Cairn.
 */
export async function migrate(db: Kysely<unknown>, dialect: SqlDialect): Promise<number[]> {
  await adoptSchemaMigrations(db, dialect, (row) => migrationName(byVersion.get(row.version) ?? row));
  const migrator = new Migrator({
    db,
    provider: {
      getMigrations: async () =>
        Object.fromEntries(
          migrations.map((m): [string, KyselyMigration] => [
            migrationName(m),
            { up: (trx) => m.up(trx, dialect) },
          ]),
        ),
    },
  });
  const { error, results = [] } = await migrator.migrateToLatest();
  if (error !== undefined) throw (await newerSchemaError(db, error)) ?? error;
  return results.filter((r) => r.status === 'Success').map((r) => byName.get(r.migrationName)!.version);
}

const byVersion = new Map(migrations.map((m) => [m.version, m]));
const byName = new Map(migrations.map((m) => [migrationName(m), m]));

/**
 * Explains Kysely's refusal ("previously executed migration ... is missing") when the database
 * records migrations this Cairn does not know: running older code on a newer schema would
 * corrupt it quietly. Undefined when that is not why the migration failed.
 */
async function newerSchemaError(db: Kysely<unknown>, cause: unknown): Promise<CairnError | undefined> {
  let recorded: string[];
  try {
    recorded = (
      await (db as Kysely<KyselyMigrationTables>).selectFrom('kysely_migration').select('name').execute()
    ).map((r) => r.name);
  } catch {
    return undefined;
  }
  const unknown = recorded.filter((name) => !byName.has(name));
  if (unknown.length === 0) return undefined;
  const newest = migrations.at(-1)?.version ?? 0;
  const versions = unknown.map((name) => Number(/^\d+/.exec(name)?.[0] ?? Number.NaN));
  const message = versions.every((v) => v > newest)
    ? `Cannot use the database: its schema version ${Math.max(...versions)} is newer than this Cairn knows (${newest}); upgrade Cairn`
    : `Cannot use the database: it records a migration this Cairn does not know (${unknown.join(', ')})`;
  return new CairnError('INVALID_ARGUMENT', message, { cause });
}

interface KyselyMigrationTables {
  kysely_migration: { name: string; timestamp: string };
}
