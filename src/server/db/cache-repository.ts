import type { Kysely } from 'kysely';
import { CairnError } from '../../lib/cairn-error.ts';
import type { CacheKeysTable, CachesTable, Database } from './database-schema.ts';

/** A cache row with its numeric id resolved. */
export type CacheRow = Omit<CachesTable, 'id'> & { id: number };

/** A signing key of a cache, active or retired. */
export type CacheKeyRow = Omit<CacheKeysTable, 'id'> & { id: number };

/** A new signing key: its name, and both halves in Nix's text form. */
export interface NewCacheKey {
  readonly name: string;
  readonly secretKey: string;
  readonly publicKey: string;
}

/** Stores binary caches and their signing keys. */
export class CacheRepository {
  constructor(private readonly db: Kysely<Database>) {}

  /** Creates a cache with its first signing key; returns undefined when the name is taken. */
  async create(
    row: Pick<CacheRow, 'workspace_id' | 'name' | 'public' | 'secret_key' | 'public_key' | 'created_at'>,
  ): Promise<CacheRow | undefined> {
    return await this.db.transaction().execute(async (trx) => {
      const inserted = await trx
        .insertInto('caches')
        .values(row)
        .onConflict((oc) => oc.column('name').doNothing())
        .returning('id')
        .executeTakeFirst();
      if (!inserted) return undefined;
      await trx
        .insertInto('cache_keys')
        .values({
          cache_id: inserted.id,
          name: row.public_key.slice(0, row.public_key.indexOf(':')),
          secret_key: row.secret_key,
          public_key: row.public_key,
          created_at: row.created_at,
        })
        .execute();
      return {
        ...row,
        id: inserted.id,
        retention_seconds: null,
        quota_bytes: null,
        gc_lease_holder: null,
        gc_lease_until: null,
      };
    });
  }

  /** Every key the cache has had, oldest first, retired ones included. */
  async keys(cacheId: number): Promise<CacheKeyRow[]> {
    return await this.db
      .selectFrom('cache_keys')
      .selectAll()
      .where('cache_id', '=', cacheId)
      .orderBy('id')
      .execute();
  }

  /**
   * Adds a signing key to the cache and makes it the one `caches.public_key` names. The older
   * keys stay active, and sign too, until they are retired.
   * @throws CairnError ALREADY_EXISTS when the cache already has a key of that name.
   */
  async addKey(cacheId: number, key: NewCacheKey, now: number): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const taken = await trx
        .selectFrom('cache_keys')
        .select('id')
        .where('cache_id', '=', cacheId)
        .where('name', '=', key.name)
        .executeTakeFirst();
      if (taken) {
        throw new CairnError(
          'ALREADY_EXISTS',
          `Cannot add a signing key: the cache had a key named '${key.name}'`,
        );
      }
      await trx
        .insertInto('cache_keys')
        .values({
          cache_id: cacheId,
          name: key.name,
          secret_key: key.secretKey,
          public_key: key.publicKey,
          created_at: now,
        })
        .execute();
      await trx
        .updateTable('caches')
        .set({ secret_key: key.secretKey, public_key: key.publicKey })
        .where('id', '=', cacheId)
        .execute();
    });
  }

  /**
   * Retires a signing key: its secret is erased and it signs nothing again. When it was the key
   * `caches.public_key` named, the newest key left takes its place.
   * @throws CairnError NOT_FOUND for a key the cache does not have (or retired already),
   *   CONFLICT for its last active key.
   */
  async retireKey(cacheId: number, keyName: string, now: number): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const active = await trx
        .selectFrom('cache_keys')
        .selectAll()
        .where('cache_id', '=', cacheId)
        .where('retired_at', 'is', null)
        .orderBy('id')
        .execute();
      if (!active.some((k) => k.name === keyName)) {
        throw new CairnError(
          'NOT_FOUND',
          `Cannot retire the signing key: the cache has no active key named '${keyName}' (active: ${active.map((k) => k.name).join(', ')})`,
        );
      }
      const left = active.filter((k) => k.name !== keyName);
      const newest = left.at(-1);
      if (!newest) {
        throw new CairnError(
          'CONFLICT',
          `Cannot retire the signing key: '${keyName}' is the cache's last key; run \`cairn cache rotate-key\` first`,
        );
      }
      await trx
        .updateTable('cache_keys')
        .set({ secret_key: '', retired_at: now })
        .where('cache_id', '=', cacheId)
        .where('name', '=', keyName)
        .execute();
      await trx
        .updateTable('caches')
        .set({ secret_key: newest.secret_key, public_key: newest.public_key })
        .where('id', '=', cacheId)
        .execute();
    });
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
