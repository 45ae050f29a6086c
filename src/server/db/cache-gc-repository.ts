import { type Kysely, sql, type Transaction } from 'kysely';
import { OPEN_STATES } from '../../protocol/deployment-state.ts';
import type { CacheGcRunsTable, CachePinsTable, Database } from './database-schema.ts';
import { inChunks } from './in-chunks.ts';
import type { SqlDialect } from './sql-types.ts';

/** Values per `IN (...)` list. */
const IN_CHUNK = 500;
/** Rows read per query when reading a whole cache's index. */
const PAGE = 1000;

/** One published path of a cache, as the collector sees it. */
export interface GcPath {
  readonly hashPart: string;
  readonly storePath: string;
  /** Hash parts of its references (itself excluded). */
  readonly refs: readonly string[];
  /** When it was last pushed or fetched (ms). */
  readonly lastUsed: number;
  readonly fileName: string;
  readonly fileSize: number;
  readonly narSize: number;
}

/** A NAR file of a cache, as the collector sees it. */
export interface GcNarFile {
  readonly fileName: string;
  readonly fileSize: number;
  readonly createdAt: number;
}

/** A recorded collection. */
export type GcRun = Omit<CacheGcRunsTable, 'id' | 'paths_removed' | 'nar_files_removed' | 'bytes_freed'> & {
  id: number;
  paths_removed: number;
  nar_files_removed: number;
  bytes_freed: number;
};

/** Hash parts of the references in a narinfo's `refs` column, itself excluded. */
export function refHashParts(refs: string, self: string): string[] {
  const out: string[] = [];
  for (const r of refs.split(' ')) {
    const h = r.slice(0, 32);
    if (h.length === 32 && h !== self) out.push(h);
  }
  return out;
}

/**
 * What the cache collector reads and writes: the paths and NAR files of a cache, its roots
 * (what agents run, ran, or are about to run; pins), its lease and its record of collections.
 *
 * The collector and the uploads agree through a lock on the cache's row: publishing a narinfo
 * and making an uploaded NAR file visible take it shared, each batch of removals takes it
 * exclusively, so no narinfo is published naming a NAR or reference removed under it. SQLite
 * runs one transaction at a time, which is the same lock for everything.
 */
export class CacheGcRepository {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly dialect: SqlDialect,
  ) {}

  /** Runs `fn` in a transaction holding the cache's lock: shared, or exclusive for removals. */
  async withCacheLock<T>(
    cacheId: number,
    mode: 'shared' | 'exclusive',
    fn: (trx: Transaction<Database>) => Promise<T>,
  ): Promise<T> {
    return await this.db.transaction().execute(async (trx) => {
      if (this.dialect === 'postgres') {
        const q = trx.selectFrom('caches').select('id').where('id', '=', cacheId);
        await (mode === 'shared' ? q.forShare() : q.forUpdate()).execute();
      }
      return await fn(trx);
    });
  }

  /** Every published path of the cache. */
  async paths(cacheId: number): Promise<Map<string, GcPath>> {
    const out = new Map<string, GcPath>();
    // In pages, in key order: one query for 100,000 rows would hold the event loop (SQLite) or a
    // connection far longer than reads being served meanwhile should wait.
    for (let after = ''; ; ) {
      const rows = await this.db
        .selectFrom('store_paths')
        .select(['hash_part', 'store_path', 'refs', 'last_accessed_at', 'file_name', 'file_size', 'nar_size'])
        .where('cache_id', '=', cacheId)
        .where('hash_part', '>', after)
        .orderBy('hash_part')
        .limit(PAGE)
        .execute();
      if (rows.length === 0) return out;
      after = (rows.at(-1) as { hash_part: string }).hash_part;
      this.#addPaths(out, rows);
      // Let requests waiting behind this one go first.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  #addPaths(
    out: Map<string, GcPath>,
    rows: ReadonlyArray<{
      hash_part: string;
      store_path: string;
      refs: string;
      last_accessed_at: number;
      file_name: string;
      file_size: number | null;
      nar_size: number;
    }>,
  ): void {
    for (const r of rows) {
      out.set(r.hash_part, {
        hashPart: r.hash_part,
        storePath: r.store_path,
        refs: refHashParts(r.refs, r.hash_part),
        lastUsed: r.last_accessed_at,
        fileName: r.file_name,
        fileSize: r.file_size ?? 0,
        narSize: r.nar_size,
      });
    }
  }

  /** Every uploaded NAR file of the cache. */
  async narFiles(cacheId: number): Promise<GcNarFile[]> {
    const out: GcNarFile[] = [];
    for (let after = ''; ; ) {
      const rows = await this.db
        .selectFrom('nar_files')
        .select(['file_name', 'file_size', 'created_at'])
        .where('cache_id', '=', cacheId)
        .where('file_name', '>', after)
        .orderBy('file_name')
        .limit(PAGE)
        .execute();
      if (rows.length === 0) return out;
      after = (rows.at(-1) as { file_name: string }).file_name;
      for (const r of rows)
        out.push({ fileName: r.file_name, fileSize: r.file_size, createdAt: r.created_at });
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * Store paths of a workspace's deployments that must stay substitutable: what each agent runs,
   * its last two successful deployments (the current one and the rollback target), every
   * deployment not finished and what its agent ran before it. With `since`, only deployments
   * made from then on (and agents' paths reported since are not told apart: all are returned).
   */
  async deploymentRoots(
    workspaceId: number,
    since?: number,
    trx?: Transaction<Database>,
  ): Promise<Set<string>> {
    const db = trx ?? this.db;
    const out = new Set<string>();
    const agents = await db
      .selectFrom('agents')
      .select('store_path')
      .where('workspace_id', '=', workspaceId)
      .where('store_path', 'is not', null)
      .execute();
    for (const a of agents) if (a.store_path) out.add(a.store_path);
    let open = db
      .selectFrom('deployments')
      .select(['store_path', 'previous_path'])
      .where('workspace_id', '=', workspaceId)
      .where('state', 'in', [...OPEN_STATES]);
    if (since !== undefined) open = open.where('created_at', '>=', since);
    for (const d of await open.execute()) {
      out.add(d.store_path);
      if (d.previous_path) out.add(d.previous_path);
    }
    if (since !== undefined) {
      const made = await db
        .selectFrom('deployments')
        .select('store_path')
        .where('workspace_id', '=', workspaceId)
        .where('created_at', '>=', since)
        .execute();
      for (const d of made) out.add(d.store_path);
      return out;
    }
    const ranked = db
      .selectFrom('deployments')
      .select(['store_path', sql<number>`row_number() over (partition by agent_id order by id desc)`.as('n')])
      .where('workspace_id', '=', workspaceId)
      .where('state', '=', 'succeeded')
      .as('ranked');
    const succeeded = await db.selectFrom(ranked).select('store_path').where('n', '<=', 2).execute();
    for (const d of succeeded) out.add(d.store_path);
    return out;
  }

  /** Hash parts of the cache's pins in force at `now` (made from `since` on, when given). */
  async pinnedHashParts(
    cacheId: number,
    now: number,
    since?: number,
    trx?: Transaction<Database>,
  ): Promise<Set<string>> {
    let q = (trx ?? this.db)
      .selectFrom('cache_pins')
      .select('hash_part')
      .where('cache_id', '=', cacheId)
      .where((eb) => eb.or([eb('expires_at', 'is', null), eb('expires_at', '>', now)]));
    if (since !== undefined) q = q.where('created_at', '>=', since);
    return new Set((await q.execute()).map((r) => r.hash_part));
  }

  /** Paths published or fetched from `since` on: their closures are spared by a running collection. */
  async usedSince(
    trx: Transaction<Database>,
    cacheId: number,
    since: number,
  ): Promise<Array<{ hashPart: string; refs: string[] }>> {
    const rows = await trx
      .selectFrom('store_paths')
      .select(['hash_part', 'refs'])
      .where('cache_id', '=', cacheId)
      .where('last_accessed_at', '>=', since)
      .execute();
    return rows.map((r) => ({ hashPart: r.hash_part, refs: refHashParts(r.refs, r.hash_part) }));
  }

  async deletePaths(
    trx: Transaction<Database>,
    cacheId: number,
    hashParts: readonly string[],
  ): Promise<number> {
    let n = 0;
    for (const chunk of inChunks(hashParts, IN_CHUNK)) {
      const r = await trx
        .deleteFrom('store_paths')
        .where('cache_id', '=', cacheId)
        .where('hash_part', 'in', chunk)
        .executeTakeFirst();
      n += Number(r.numDeletedRows);
    }
    return n;
  }

  /**
   * Of these NAR files, the ones still unused by any published path and uploaded before each
   * one's `cutoff`: the ones a collection may remove now.
   */
  async removableNarFiles(
    trx: Transaction<Database>,
    cacheId: number,
    files: ReadonlyArray<{ fileName: string; cutoff: number }>,
  ): Promise<string[]> {
    const out: string[] = [];
    const cutoffs = new Map(files.map((f) => [f.fileName, f.cutoff]));
    for (const chunk of inChunks([...cutoffs.keys()], IN_CHUNK)) {
      const rows = await trx
        .selectFrom('nar_files as n')
        .select(['n.file_name', 'n.created_at'])
        .where('n.cache_id', '=', cacheId)
        .where('n.file_name', 'in', chunk)
        .where((eb) =>
          eb.not(
            eb.exists(
              eb
                .selectFrom('store_paths as s')
                .select('s.hash_part')
                .whereRef('s.cache_id', '=', 'n.cache_id')
                .whereRef('s.file_name', '=', 'n.file_name'),
            ),
          ),
        )
        .execute();
      for (const r of rows) if (r.created_at < (cutoffs.get(r.file_name) as number)) out.push(r.file_name);
    }
    return out;
  }

  async deleteNarFiles(
    trx: Transaction<Database>,
    cacheId: number,
    fileNames: readonly string[],
  ): Promise<void> {
    for (const chunk of inChunks(fileNames, IN_CHUNK)) {
      await trx
        .deleteFrom('nar_files')
        .where('cache_id', '=', cacheId)
        .where('file_name', 'in', chunk)
        .execute();
    }
  }

  /**
   * Takes (or renews) the cache's collection lease until `until`; false when another holder's
   * lease is still in force.
   */
  async claimLease(cacheId: number, holder: string, now: number, until: number): Promise<boolean> {
    const r = await this.db
      .updateTable('caches')
      .set({ gc_lease_holder: holder, gc_lease_until: until })
      .where('id', '=', cacheId)
      .where((eb) =>
        eb.or([
          eb('gc_lease_until', 'is', null),
          eb('gc_lease_until', '<', now),
          eb('gc_lease_holder', '=', holder),
        ]),
      )
      .executeTakeFirst();
    return Number(r.numUpdatedRows) === 1;
  }

  async releaseLease(cacheId: number, holder: string): Promise<void> {
    await this.db
      .updateTable('caches')
      .set({ gc_lease_holder: null, gc_lease_until: null })
      .where('id', '=', cacheId)
      .where('gc_lease_holder', '=', holder)
      .execute();
  }

  async leaseOf(cacheId: number): Promise<{ holder: string | null; until: number | null }> {
    const r = await this.db
      .selectFrom('caches')
      .select(['gc_lease_holder', 'gc_lease_until'])
      .where('id', '=', cacheId)
      .executeTakeFirstOrThrow();
    return { holder: r.gc_lease_holder, until: r.gc_lease_until };
  }

  async startRun(cacheId: number, trigger: string, at: number): Promise<number> {
    const r = await this.db
      .insertInto('cache_gc_runs')
      .values({ cache_id: cacheId, trigger, started_at: at, finished_at: null, error: null })
      .returning('id')
      .executeTakeFirstOrThrow();
    return r.id;
  }

  async finishRun(
    id: number,
    result: { at: number; paths: number; narFiles: number; bytes: number; error: string | null },
  ): Promise<void> {
    await this.db
      .updateTable('cache_gc_runs')
      .set({
        finished_at: result.at,
        paths_removed: result.paths,
        nar_files_removed: result.narFiles,
        bytes_freed: result.bytes,
        error: result.error,
      })
      .where('id', '=', id)
      .execute();
  }

  /** The cache's latest collections, newest first. */
  async runs(cacheId: number, limit: number): Promise<GcRun[]> {
    return (await this.db
      .selectFrom('cache_gc_runs')
      .selectAll()
      .where('cache_id', '=', cacheId)
      .orderBy('id', 'desc')
      .limit(limit)
      .execute()) as GcRun[];
  }

  async pins(cacheId: number): Promise<CachePinsTable[]> {
    return await this.db
      .selectFrom('cache_pins')
      .selectAll()
      .where('cache_id', '=', cacheId)
      .orderBy('store_path')
      .execute();
  }

  /** Pins a path (or changes an existing pin's expiry). */
  async pin(row: CachePinsTable): Promise<void> {
    await this.db
      .insertInto('cache_pins')
      .values(row)
      .onConflict((oc) =>
        oc.columns(['cache_id', 'hash_part']).doUpdateSet({
          expires_at: row.expires_at,
          created_at: row.created_at,
          created_by: row.created_by,
        }),
      )
      .execute();
  }

  /** Removes a pin; false when there was none. */
  async unpin(cacheId: number, hashPart: string): Promise<boolean> {
    const r = await this.db
      .deleteFrom('cache_pins')
      .where('cache_id', '=', cacheId)
      .where('hash_part', '=', hashPart)
      .executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  /** Sets a cache's retention and quota (null: the server's default retention; no quota). */
  async setPolicy(
    cacheId: number,
    policy: { retentionSeconds: number | null; quotaBytes: number | null },
  ): Promise<void> {
    await this.db
      .updateTable('caches')
      .set({ retention_seconds: policy.retentionSeconds, quota_bytes: policy.quotaBytes })
      .where('id', '=', cacheId)
      .execute();
  }
}
