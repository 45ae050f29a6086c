import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * Agent tags: free labels such as `canary` or `eu-west`, chosen by an admin, that rollout
 * policies select agents by (`tag:canary`). One row per agent and tag.
 */
export const migration008: Migration = {
  version: 8,
  name: 'agent tags',
  async up(db: Kysely<unknown>) {
    await db.schema
      .createTable('agent_tags')
      .addColumn('agent_id', 'integer', (c) => c.notNull().references('agents.id').onDelete('cascade'))
      .addColumn('tag', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('agent_tags_pk', ['agent_id', 'tag'])
      .execute();
    await db.schema.createIndex('agent_tags_tag').on('agent_tags').columns(['tag', 'agent_id']).execute();
  },
};
