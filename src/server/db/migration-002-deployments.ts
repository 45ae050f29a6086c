import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';
import { nameType, type SqlDialect, serialId } from './sql-types.ts';

/** Agents, rollouts, deployments and their logs. */
export const migration002: Migration = {
  version: 2,
  name: 'agents, rollouts, deployments and deployment logs',
  async up(db: Kysely<unknown>, dialect: SqlDialect) {
    await db.schema
      .createTable('agents')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('name', nameType(dialect), (c) => c.notNull())
      .addColumn('token_id', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('last_seen_at', 'bigint')
      .addColumn('online', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('store_path', 'text')
      .addColumn('generation', 'integer')
      .addColumn('kind', 'text')
      .addColumn('system', 'text')
      .addColumn('hostname', 'text')
      .addColumn('agent_version', 'text')
      .addColumn('nix_version', 'text')
      .addColumn('profile', 'text')
      .addUniqueConstraint('agents_workspace_name', ['workspace_id', 'name'])
      .execute();
    await db.schema
      .createTable('rollouts')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('created_by', 'text', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('deployments')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('rollout_id', 'integer', (c) => c.notNull().references('rollouts.id'))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('agent_id', 'integer', (c) => c.notNull().references('agents.id'))
      .addColumn('store_path', 'text', (c) => c.notNull())
      .addColumn('rollback_script', 'text')
      .addColumn('exit4', 'text', (c) => c.notNull())
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('step', 'text')
      .addColumn('reason', 'text')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('started_at', 'bigint')
      .addColumn('finished_at', 'bigint')
      .execute();
    await db.schema
      .createIndex('deployments_agent_state')
      .on('deployments')
      .columns(['agent_id', 'state'])
      .execute();
    await db.schema.createIndex('deployments_rollout').on('deployments').column('rollout_id').execute();
    await db.schema
      .createTable('deployment_logs')
      .addColumn('deployment_id', 'integer', (c) => c.notNull().references('deployments.id'))
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('t', 'bigint', (c) => c.notNull())
      .addColumn('text', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('deployment_logs_pk', ['deployment_id', 'seq'])
      .execute();
  },
};
