import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';
import { type SqlDialect, serialId } from './sql-types.ts';

/** The audit log: who did what, from where, when. */
export const migration005: Migration = {
  version: 5,
  name: 'audit log',
  async up(db: Kysely<unknown>, dialect: SqlDialect) {
    await db.schema
      .createTable('audit_log')
      .addColumn('id', 'integer', serialId(dialect))
      .addColumn('workspace_id', 'integer', (c) => c.notNull().references('workspaces.id'))
      .addColumn('at', 'bigint', (c) => c.notNull())
      .addColumn('token_id', 'text')
      .addColumn('token_name', 'text')
      .addColumn('action', 'text', (c) => c.notNull())
      .addColumn('target', 'text', (c) => c.notNull())
      .addColumn('address', 'text')
      .addColumn('detail', 'text')
      .execute();
    await db.schema
      .createIndex('audit_log_workspace_at')
      .on('audit_log')
      .columns(['workspace_id', 'id'])
      .execute();
  },
};
