import { randomBytes } from 'node:crypto';
import { type Kysely, sql } from 'kysely';
import type { Migration } from './migrations.ts';
import type { SqlDialect } from './sql-types.ts';

/**
 * The server's identity: a random 128-bit id (hex), made when this migration runs on the
 * server's first start and kept for its life. Agents record it with each deployment id in their
 * journal, since deployment ids are per server (a new data dir starts again at 1). Replicas
 * sharing one database share the id, as they share the deployments. One row, `id = 1`.
 */
export const migration006: Migration = {
  version: 6,
  name: 'server identity',
  async up(db: Kysely<unknown>, _dialect: SqlDialect) {
    await db.schema
      .createTable('server_identity')
      .addColumn('id', 'integer', (c) => c.primaryKey())
      .addColumn('server_id', 'text', (c) => c.notNull())
      .addColumn('created_at', 'bigint', (c) => c.notNull())
      .execute();
    const serverId = randomBytes(16).toString('hex');
    await sql`insert into server_identity (id, server_id, created_at) values (1, ${serverId}, ${Date.now()})`.execute(
      db,
    );
  },
};
