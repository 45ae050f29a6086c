import { type CompiledQuery, type Kysely, sql } from 'kysely';
import type { Database, NarFilesTable, StorePathsTable } from './database-schema.ts';

/** How many values go into one `IN (...)` list; SQLite allows 32766 bound parameters. */
const IN_CHUNK = 500;

/** The path index of every cache: uploaded NAR files and published store paths. */
export class PathIndex {
  #narinfoQuery: CompiledQuery<{ narinfo: string }> | undefined;

  constructor(private readonly db: Kysely<Database>) {}

  async narFile(cacheId: number, fileName: string): Promise<NarFilesTable | undefined> {
    return await this.db
      .selectFrom('nar_files')
      .selectAll()
      .where('cache_id', '=', cacheId)
      .where('file_name', '=', fileName)
      .executeTakeFirst();
  }

  /** Records an uploaded NAR file, replacing an earlier record of the same file. */
  async putNarFile(row: NarFilesTable): Promise<void> {
    await this.db
      .insertInto('nar_files')
      .values(row)
      .onConflict((oc) =>
        oc.columns(['cache_id', 'file_name']).doUpdateSet({
          compression: row.compression,
          file_hash: row.file_hash,
          file_size: row.file_size,
          nar_hash: row.nar_hash,
          nar_size: row.nar_size,
          created_at: row.created_at,
        }),
      )
      .execute();
  }

  async deleteNarFile(cacheId: number, fileName: string): Promise<void> {
    await this.db
      .deleteFrom('nar_files')
      .where('cache_id', '=', cacheId)
      .where('file_name', '=', fileName)
      .execute();
  }

  /** True when some published path serves this NAR file. */
  async narFileInUse(cacheId: number, fileName: string): Promise<boolean> {
    const row = await this.db
      .selectFrom('store_paths')
      .select('hash_part')
      .where('cache_id', '=', cacheId)
      .where('file_name', '=', fileName)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** The narinfo text served for a hash part, or undefined. */
  async narinfo(cacheId: number, hashPart: string): Promise<string | undefined> {
    // The hot lookup: built and compiled once, each call only binds its two values.
    this.#narinfoQuery ??= this.db
      .selectFrom('store_paths')
      .select('narinfo')
      .where('cache_id', '=', 0)
      .where('hash_part', '=', '')
      .compile();
    const result = await this.db.executeQuery<{ narinfo: string }>({
      ...this.#narinfoQuery,
      parameters: [cacheId, hashPart],
    });
    return result.rows[0]?.narinfo;
  }

  async storePath(cacheId: number, hashPart: string): Promise<StorePathsTable | undefined> {
    return await this.db
      .selectFrom('store_paths')
      .selectAll()
      .where('cache_id', '=', cacheId)
      .where('hash_part', '=', hashPart)
      .executeTakeFirst();
  }

  /** Which of these hash parts the cache holds: one query per 500, not one per path. */
  async existingHashParts(cacheId: number, hashParts: readonly string[]): Promise<Set<string>> {
    const found = new Set<string>();
    for (let i = 0; i < hashParts.length; i += IN_CHUNK) {
      const chunk = hashParts.slice(i, i + IN_CHUNK);
      const rows = await this.db
        .selectFrom('store_paths')
        .select('hash_part')
        .where('cache_id', '=', cacheId)
        .where('hash_part', 'in', chunk)
        .execute();
      for (const r of rows) found.add(r.hash_part);
    }
    return found;
  }

  /** Publishes a path; an existing row for it is left as it is. Returns true when inserted. */
  async insertStorePath(row: StorePathsTable): Promise<boolean> {
    const result = await this.db
      .insertInto('store_paths')
      .values(row)
      .onConflict((oc) => oc.columns(['cache_id', 'hash_part']).doNothing())
      .executeTakeFirst();
    return Number(result.numInsertedOrUpdatedRows ?? 0n) > 0;
  }

  /** Marks paths as fetched at `at` (never moving a later access back). */
  async touch(cacheId: number, hashParts: readonly string[], at: number): Promise<void> {
    for (let i = 0; i < hashParts.length; i += IN_CHUNK) {
      // The later of the two in SET, not `last_accessed_at < at` in WHERE: SQLite then took the
      // index on (cache_id, last_accessed_at) and scanned every older path of the cache for each
      // chunk (bench:cache-gc: 10,000 fetches recorded against 100,000 paths held every request
      // 1.8 s); now the primary key finds the chunk's rows.
      await this.db
        .updateTable('store_paths')
        .set({
          last_accessed_at: sql<number>`case when last_accessed_at < ${at} then cast(${at} as bigint) else last_accessed_at end`,
        })
        .where('cache_id', '=', cacheId)
        .where('hash_part', 'in', hashParts.slice(i, i + IN_CHUNK))
        .execute();
    }
  }

  /**
   * {@link touch} of many groups (hash parts fetched in the same second), in one transaction:
   * on SQLite each statement alone would be a transaction and a sync to disk of its own, and
   * 10,000 paths read in 30 seconds took 1.7 s to record (bench:cache-gc).
   */
  async touchMany(
    cacheId: number,
    groups: ReadonlyArray<readonly [number, readonly string[]]>,
  ): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      const index = new PathIndex(trx);
      for (const [at, hashParts] of groups) await index.touch(cacheId, hashParts, at);
    });
  }
}
