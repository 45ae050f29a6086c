import type { Kysely } from 'kysely';
import type { Migration } from './migrations.ts';

/**
 * An index that finds the deployments to a store path still lacking their closure size without
 * reading the others. Every closure report sets the size on the deployments to its root that lack
 * it; with only `(workspace_id, store_path)`, a rollout of one system to N machines read all N
 * rows on each of the N reports. `closure_nar_size IS NULL` is an index term on both databases, so
 * once the sizes are set a report finds nothing in one seek.
 */
export const migration007: Migration = {
  version: 7,
  name: 'index of deployments lacking their closure size',
  async up(db: Kysely<unknown>) {
    await db.schema
      .createIndex('deployments_closure_size')
      .on('deployments')
      .columns(['workspace_id', 'store_path', 'closure_nar_size'])
      .execute();
  },
};
