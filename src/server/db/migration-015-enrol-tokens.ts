import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';
import { serialId } from './sql-types.ts';

/**
 * Enrolment tokens: one secret that registers many machines, each under its own name and with
 * its own agent token, a bounded number of times (`max_uses`) until it expires or is revoked.
 * They live apart from `tokens` so that no route but enrolment can ever accept one.
 * `agents.pending_since` is set when an agent enrolled with a token that requires approval: it
 * receives no deployment until an admin approves it (the column is cleared); `agents.enrolled_with`
 * names the enrolment token an agent enrolled with.
 */
export const migration015: Migration = {
  version: 15,
  name: 'enrol tokens',
  async up(db: Kysely<unknown>, dialect) {
    await db.schema
      .createTable('enrol_tokens')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      // Hex SHA-256 of the secret, as for `tokens`.
      .addColumn('hash', 'text', (c) => c.notNull().unique())
      .addColumn('max_uses', 'integer', (c) => c.notNull())
      .addColumn('uses', 'integer', (c) => c.notNull().defaultTo(0))
      // A JSON array of the tags every agent it enrols gets.
      .addColumn('tags', 'text', (c) => c.notNull())
      .addColumn('name_pattern', 'text')
      .addColumn('require_approval', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('created_by', 'text', (c) => c.notNull())
      .addColumn('expires_at', 'bigint')
      .addColumn('revoked_at', 'bigint')
      .execute();
    await db.schema.createIndex('enrol_tokens_workspace').on('enrol_tokens').column('workspace_id').execute();
    await db.schema.alterTable('agents').addColumn('pending_since', 'bigint').execute();
    // The enrolment token an agent enrolled with (null: created by an admin), for the dashboard.
    await db.schema.alterTable('agents').addColumn('enrolled_with', 'integer').execute();
  },
};
