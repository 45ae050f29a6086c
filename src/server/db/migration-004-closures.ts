import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';
import { type SqlDialect, serialId } from './sql-types.ts';

/**
 * Closures of deployed store paths, stored once: every distinct store path once
 * (`closure_paths`), every distinct root once per workspace (`closures`), and the membership
 * of one in the other (`closure_members`). Deployments of the same path share one closure; a
 * fleet of machines running nearly the same system shares nearly every path row.
 * Also dashboard sessions, and when a deployment's logs were deleted by retention.
 */
export const migration004: Migration = {
  version: 4,
  name: 'closures, closure sizes of deployments, dashboard sessions, log retention',
  async up(db: Kysely<unknown>, dialect: SqlDialect) {
    await db.schema
      .createTable('closure_paths')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('path', 'text', (c) => c.notNull().unique())
      .addColumn('nar_size', 'bigint', (c) => c.notNull())
      // Space-separated base names, as in a narinfo's References.
      .addColumn('refs', 'text', (c) => c.notNull())
      .execute();
    await db.schema
      .createTable('closures')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('root', 'text', (c) => c.notNull())
      .addColumn('complete', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('path_count', 'integer')
      .addColumn('nar_size', 'bigint')
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addUniqueConstraint('closures_workspace_root', ['workspace_id', 'root'])
      .execute();
    await db.schema
      .createTable('closure_members')
      .addColumn('closure_id', 'integer', (c) => c.notNull().references('closures.id'))
      .addColumn('path_id', 'integer', (c) => c.notNull().references('closure_paths.id'))
      .addPrimaryKeyConstraint('closure_members_pk', ['closure_id', 'path_id'])
      .execute();
    await db.schema.alterTable('deployments').addColumn('closure_nar_size', 'bigint').execute();
    await db.schema.alterTable('deployments').addColumn('logs_expired_at', 'bigint').execute();
    await db.schema
      .createIndex('deployments_workspace_path')
      .on('deployments')
      .columns(['workspace_id', 'store_path'])
      .execute();
    await db.schema.createIndex('deployments_finished').on('deployments').columns(['finished_at']).execute();
    await db.schema
      .createTable('dashboard_sessions')
      // Hex SHA-256 of the cookie's secret: a stolen database holds no usable session.
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('token_id', 'text', (c) => c.notNull().references('tokens.id'))
      .addColumn('csrf', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .addColumn('expires_at', 'bigint', (c) => c.notNull())
      .execute();
  },
};
