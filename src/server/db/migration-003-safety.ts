import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';

/** Health checks, confirm timeouts, rollbacks and reboot awareness of deployments. */
export const migration003: Migration = {
  version: 3,
  name: 'deployment health checks, confirm timeout, kind and reboot-required',
  async up(db: Kysely<unknown>) {
    await db.schema.alterTable('deployments').addColumn('health_checks', 'text').execute();
    await db.schema
      .alterTable('deployments')
      .addColumn('confirm_timeout', 'integer', (c) => c.notNull().defaultTo(60))
      .execute();
    await db.schema
      .alterTable('deployments')
      .addColumn('kind', 'text', (c) => c.notNull().defaultTo('deploy'))
      .execute();
    await db.schema
      .alterTable('deployments')
      .addColumn('reboot_required', 'integer', (c) => c.notNull().defaultTo(0))
      .execute();
  },
};
