import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * `plan_requests`: a plan's question to an agent's machine held by another replica (PostgreSQL
 * replicas), and the answer that replica writes once the machine answered. The replica asking
 * rings a doorbell naming the request and the agent; the one holding the agent asks it and rings
 * back. Rows live for the length of one plan; the asker deletes its own, and any older than an
 * hour (an asker that died) at its next plan.
 */
export const migration019: Migration = {
  version: 19,
  name: 'plan requests',
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('plan_requests')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('agent_id', 'integer', (c) => c.notNull())
      // The question as JSON: store path, rollback script, dry-activate, timeout.
      .addColumn('question', 'text', (c) => c.notNull())
      // The outcome as JSON, once the replica holding the agent has it.
      .addColumn('answer', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
  },
};
