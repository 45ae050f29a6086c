import { type Kysely, sql } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * Staged rollouts as data: a rollout's policy, current batch and the decisions about each of its
 * agents are columns, so that the engine can recompute every decision from the database (after a
 * restart, or on another replica). A rollout without a policy deploys at once, as before: its
 * deployments are dispatched when created.
 */
export const migration009: Migration = {
  version: 9,
  name: 'staged rollouts',
  async up(db: Kysely<unknown>) {
    const rolloutColumns: Array<[string, 'text' | 'integer' | 'bigint', string?]> = [
      // The normalised policy (JSON), or null for a rollout that deploys at once.
      ['policy', 'text'],
      // pending | running | paused | succeeded | failed | aborted | superseded; null without a policy.
      ['state', 'text'],
      ['reason', 'text'],
      // Why the rollout waits, for people (bake, manual gate, offline agents, deadline).
      ['waiting', 'text'],
      // The batch open now (-1 before the first opens), and the batch promote asked to open.
      ['batch', 'integer', '-1'],
      ['batch_count', 'integer', '0'],
      ['promoted_to', 'integer', '-1'],
      ['batch_opened_at', 'bigint'],
      ['paused_at', 'bigint'],
      ['resumed_at', 'bigint'],
      ['finished_at', 'bigint'],
      // Failures the threshold no longer counts (those before a resume after a failure pause).
      ['accepted_failed', 'integer', '0'],
      ['accepted_decided', 'integer', '0'],
      // Compare-and-set: every decision applies only to the version it was computed from.
      ['version', 'integer', '0'],
      // revert: `pending` while switched agents remain to be rolled back, then `done`.
      ['revert_state', 'text'],
      // For a rollout made to revert another.
      ['reverts_rollout_id', 'integer'],
    ];
    for (const [name, type, dflt] of rolloutColumns) {
      await db.schema
        .alterTable('rollouts')
        .addColumn(name, type, (c) => (dflt === undefined ? c : c.notNull().defaultTo(sql.raw(dflt))))
        .execute();
    }
    const deploymentColumns: Array<[string, 'text' | 'integer' | 'bigint', string?]> = [
      // Index of the deployment's batch (the canaries' batch is 0 when there are canaries).
      ['batch', 'integer'],
      // When the agent was let to see it; null while its batch has not opened.
      ['dispatched_at', 'bigint'],
      // When it was held back because its agent was offline as its batch opened.
      ['deferred_at', 'bigint'],
      // The engine's verdict: succeeded | failed | timed-out | cancelled.
      ['outcome', 'text'],
      // 0 for an agent that returned after being deferred: outside the quota and the threshold.
      ['counted', 'integer', '1'],
      // What the agent ran when the rollout was made, for `revert`.
      ['previous_path', 'text'],
      ['reverted', 'integer', '0'],
    ];
    for (const [name, type, dflt] of deploymentColumns) {
      await db.schema
        .alterTable('deployments')
        .addColumn(name, type, (c) => (dflt === undefined ? c : c.notNull().defaultTo(sql.raw(dflt))))
        .execute();
    }
    // Every deployment made before staged rollouts was dispatched when it was created.
    await sql`update deployments set dispatched_at = created_at`.execute(db);
    await db.schema.createIndex('rollouts_state').on('rollouts').columns(['state']).execute();
    await db.schema
      .createIndex('deployments_rollout_batch')
      .on('deployments')
      .columns(['rollout_id', 'batch'])
      .execute();
  },
};
