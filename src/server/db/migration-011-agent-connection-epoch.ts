import { type Kysely, sql } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * Which connection of an agent is the newest, across replicas: every hello takes the next epoch
 * in the agent's row. A replica closes its connection of an agent when a newer epoch is announced,
 * and marks the agent offline only if the connection that closed still holds the row's epoch, so
 * that an old connection closing late on one replica does not undo the new one's "online" on
 * another.
 */
export const migration011: Migration = {
  version: 11,
  name: 'agent connection epoch',
  async up(db: Kysely<unknown>) {
    await db.schema
      .alterTable('agents')
      .addColumn('connection_epoch', 'integer', (c) => c.notNull().defaultTo(sql.raw('0')))
      .execute();
  },
};
