import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * Which replica holds each agent's connection, and whether that replica is alive: each replica
 * keeps a lease row in `replica_leases` renewed every few seconds, and every hello records the
 * replica in the agent's row (`agents.replica_id`). A replica that dies without closing its
 * connections (SIGKILL, a lost machine) stops renewing; once its lease has expired, another
 * replica marks its agents offline. SQLite's single process writes neither.
 */
export const migration012: Migration = {
  version: 12,
  name: 'replica leases',
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('replica_leases')
      .addColumn('replica_id', 'text', (c) => c.primaryKey())
      .addColumn('started_at', 'bigint', (c) => c.notNull())
      .addColumn('expires_at', 'bigint', (c) => c.notNull())
      .execute();
    await db.schema.alterTable('agents').addColumn('replica_id', 'text').execute();
    // The sweep finds a dead replica's agents by it.
    await db.schema.createIndex('agents_replica_id').on('agents').column('replica_id').execute();
  },
};
