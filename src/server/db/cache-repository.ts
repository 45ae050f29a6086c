import type { Kysely } from 'kysely';
import type { CachesTable, Database } from './database-schema.ts';

/** A cache row with its numeric id resolved. */
export type CacheRow = Omit<CachesTable, 'id'> & { id: number };

/** Stores binary caches and their signing keys. */
export class CacheRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Creates a cache; returns undefined when the name is taken. */
  async create(
    row: Pick<CacheRow, 'workspace_id' | 'name' | 'public' | 'secret_key' | 'public_key' | 'created_at'>,
  ): Promise<CacheRow | undefined> {
    const inserted = await this.db
      .insertInto('caches')
      .values(row)
      .onConflict((oc) => oc.column('name').doNothing())
      .returning('id')
      .executeTakeFirst();
    return inserted
      ? {
          ...row,
          id: inserted.id,
          retention_seconds: null,
          quota_bytes: null,
          gc_lease_holder: null,
          gc_lease_until: null,
        }
      : undefined;
  }

  /** Every cache of every workspace (the collector's rounds). */
  async all(): Promise<CacheRow[]> {
    return await this.db.selectFrom('caches').selectAll().orderBy('id').execute();
  }

  async byName(name: string): Promise<CacheRow | undefined> {
    return await this.db.selectFrom('caches').selectAll().where('name', '=', name).executeTakeFirst();
  }

  async list(workspaceId: number): Promise<CacheRow[]> {
    return await this.db
      .selectFrom('caches')
      .selectAll()
      .where('workspace_id', '=', workspaceId)
      .orderBy('name')
      .execute();
  }

  /** Paths and bytes held by each cache of the workspace, by cache id. */
  async stats(
    cacheIds: readonly number[],
  ): Promise<Map<number, { paths: number; narBytes: number; fileBytes: number }>> {
    if (cacheIds.length === 0) return new Map();
    const rows = await this.db
      .selectFrom('store_paths')
      // PostgreSQL's count is int8 and its sum of int8 is numeric, which pg returns as a string;
      // casting the sums to bigint makes all three int8, read as numbers (see openDatabase).
      .select((eb) => [
        'cache_id',
        eb.fn.countAll<number>().as('paths'),
        eb.cast<number>(eb.fn.coalesce(eb.fn.sum('nar_size'), eb.lit(0)), 'bigint').as('nar_bytes'),
        eb.cast<number>(eb.fn.coalesce(eb.fn.sum('file_size'), eb.lit(0)), 'bigint').as('file_bytes'),
      ])
      .where('cache_id', 'in', cacheIds)
      .groupBy('cache_id')
      .execute();
    return new Map(
      rows.map((r) => [r.cache_id, { paths: r.paths, narBytes: r.nar_bytes, fileBytes: r.file_bytes }]),
    );
  }
}
