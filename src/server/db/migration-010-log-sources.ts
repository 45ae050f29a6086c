import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * Per deployment, the highest line number (`n`) stored from each source of an agent's log lines
 * (`src`, see logLineSchema). Kept in the database, not in one server's memory, so that lines an
 * agent sends again after reconnecting to another replica are stored once.
 */
export const migration010: Migration = {
  version: 10,
  name: 'log sources',
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('deployment_log_sources')
      .addColumn('deployment_id', 'integer', (c) =>
        c.notNull().references('deployments.id').onDelete('cascade'),
      )
      .addColumn('src', 'text', (c) => c.notNull())
      .addColumn('last_n', 'bigint', (c) => c.notNull())
      .addPrimaryKeyConstraint('deployment_log_sources_pk', ['deployment_id', 'src'])
      .execute();
  },
};
