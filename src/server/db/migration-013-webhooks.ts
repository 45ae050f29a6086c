import { type Kysely, sql } from 'kysely';
import type { Migration } from './migrations.ts';
import { serialId } from './sql-types.ts';

/**
 * Webhooks: the endpoints a workspace tells about deployments, rollouts and agents, and the
 * outbox of deliveries. A delivery row is written in the same transaction as the state change it
 * tells about, so a crash between the two loses nothing; a tick claims due rows and sends them.
 * `agents.offline_since` records when an agent went offline (by its connection closing, the
 * server restarting or its replica dying), and `agents.offline_notified_at` when that was
 * announced, so that each time it goes offline is announced once, after the grace period.
 */
export const migration013: Migration = {
  version: 13,
  name: 'webhooks',
  async up(db: Kysely<unknown>, dialect) {
    await db.schema
      .createTable('webhook_endpoints')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('url', 'text', (c) => c.notNull())
      // A JSON array of event types.
      .addColumn('events', 'text', (c) => c.notNull())
      // `whsec_<base64>`: kept as is, since signing needs it (as a Nix cache's secret key is).
      .addColumn('secret', 'text', (c) => c.notNull())
      // After a rotation, the secret before it: deliveries carry a signature with each until then.
      .addColumn('previous_secret', 'text')
      .addColumn('previous_secret_until', 'bigint')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('created_by', 'text', (c) => c.notNull())
      .addColumn('disabled_at', 'bigint')
      .addColumn('disabled_reason', 'text')
      .addColumn('last_success_at', 'bigint')
      .addColumn('deleted_at', 'bigint')
      .execute();
    await db.schema
      .createIndex('webhook_endpoints_workspace')
      .on('webhook_endpoints')
      .column('workspace_id')
      .execute();
    await db.schema
      .createTable('webhook_deliveries')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('endpoint_id', 'integer', (c) => c.notNull().references('webhook_endpoints.id'))
      .addColumn('workspace_id', 'integer', (c) => c.notNull())
      // The `webhook-id` header: the same on every attempt, the receiver's idempotency key.
      .addColumn('message_id', 'text', (c) => c.notNull())
      .addColumn('event', 'text', (c) => c.notNull())
      // The event's data, JSON; the body is rendered from it at each attempt, identically.
      .addColumn('data', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      // pending, succeeded or failed.
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('next_attempt_at', 'bigint')
      // A replica sending it now holds it until then (a replica killed mid-send lets it go).
      .addColumn('claimed_until', 'bigint')
      .addColumn('last_attempt_at', 'bigint')
      .addColumn('last_status', 'integer')
      .addColumn('last_error', 'text')
      .addColumn('finished_at', 'bigint')
      .execute();
    // The tick's claim: due pending rows, oldest first.
    await db.schema
      .createIndex('webhook_deliveries_due')
      .on('webhook_deliveries')
      .columns(['state', 'next_attempt_at'])
      .execute();
    // Finished deliveries are deleted after the retention period.
    await db.schema
      .createIndex('webhook_deliveries_finished')
      .on('webhook_deliveries')
      .column('finished_at')
      .execute();
    await db.schema
      .createIndex('webhook_deliveries_endpoint')
      .on('webhook_deliveries')
      .columns(['endpoint_id', 'id'])
      .execute();
    await db.schema.alterTable('agents').addColumn('offline_since', 'bigint').execute();
    await db.schema.alterTable('agents').addColumn('offline_notified_at', 'bigint').execute();
    // Agents offline before webhooks existed are not announced all at once on upgrade.
    await sql`update agents set offline_since = last_seen_at, offline_notified_at = last_seen_at
      where online = 0`.execute(db);
  },
};
