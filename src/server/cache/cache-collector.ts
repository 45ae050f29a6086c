import { CairnError } from '../../lib/cairn-error.ts';
import { parseStorePath } from '../../nix/store-path.ts';
import type { CacheGcRepository, GcNarFile } from '../db/cache-gc-repository.ts';
import type { CacheRow } from '../db/cache-repository.ts';
import type { BinaryCache } from './binary-cache.ts';
import { type GcPath, planCollection } from './plan-collection.ts';

/** Paths removed per transaction: keeps each hold of the cache's lock to a few milliseconds. */
const BATCH = 500;
/** NAR files removed per transaction: their blobs are deleted while the lock is held. */
const FILE_BATCH = 100;
/** How long a collection's lease lasts without renewal; renewed by every batch. */
const LEASE_MS = 60_000;
export const DEFAULT_RETENTION_SECONDS = 28 * 24 * 60 * 60;
export const DEFAULT_UPLOAD_GRACE_MS = 60 * 60 * 1000;

/** What a collection removes (or, dry, would remove). */
export interface GcResult {
  readonly cache: string;
  readonly dryRun: boolean;
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly retentionSeconds: number;
  readonly quotaBytes: number | null;
  readonly paths: ReadonlyArray<{
    storePath: string;
    reason: 'retention' | 'quota';
    fileSize: number;
    narSize: number;
  }>;
  readonly narFiles: ReadonlyArray<{ fileName: string; fileSize: number }>;
  readonly bytesFreed: number;
  /** Paths kept because a root (a deployment, a pin) needs them. */
  readonly rootPaths: number;
  readonly keptPaths: number;
  readonly bytesKept: number;
  /** Planned removals left alone because something started using them during the collection. */
  readonly spared: number;
}

/**
 * Collects a cache's garbage: the paths no root needs and nobody pushed or fetched within the
 * cache's retention (then, over its quota, the least recently used), and the NAR files no
 * published path uses, once older than the upload grace period. See `plan-collection.ts` for
 * the choice and `CacheGcRepository` for how it stays safe against concurrent uploads.
 */
export class CacheCollector {
  readonly #repo: CacheGcRepository;
  readonly #cache: BinaryCache;
  readonly #now: () => number;
  readonly #holder: string;
  readonly #uploadGraceMs: number;
  readonly #onRemoved: (cacheId: number) => void;
  readonly #running = new Set<number>();

  constructor(deps: {
    repo: CacheGcRepository;
    binaryCache: BinaryCache;
    now: () => number;
    /** Names this server in the lease (the replica id). */
    holder: string;
    uploadGraceMs: number;
    /** Called after each batch of removals (replicas are told to forget those narinfos). */
    onRemoved: (cacheId: number) => void;
  }) {
    this.#repo = deps.repo;
    this.#cache = deps.binaryCache;
    this.#now = deps.now;
    this.#holder = deps.holder;
    this.#uploadGraceMs = deps.uploadGraceMs;
    this.#onRemoved = deps.onRemoved;
  }

  /** The retention a cache has: its own, or the default. */
  static retentionOf(row: Pick<CacheRow, 'retention_seconds'>): number {
    return row.retention_seconds ?? DEFAULT_RETENTION_SECONDS;
  }

  /**
   * Collects one cache, or with `dryRun` says what a collection would remove now. A real run
   * needs the cache's lease: refused with CONFLICT while another holds it.
   */
  async collect(
    row: CacheRow,
    options: { dryRun: boolean; trigger: 'manual' | 'schedule' },
  ): Promise<GcResult> {
    if (options.dryRun) return (await this.#plan(row, true)).result;
    if (this.#running.has(row.id)) throw this.#busy(row, this.#holder);
    this.#running.add(row.id);
    try {
      const now = this.#now();
      if (!(await this.#repo.claimLease(row.id, this.#holder, now, now + LEASE_MS))) {
        throw this.#busy(row, (await this.#repo.leaseOf(row.id)).holder);
      }
      const runId = await this.#repo.startRun(row.id, options.trigger, now);
      try {
        const result = await this.#run(row);
        await this.#repo.finishRun(runId, {
          at: result.finishedAt,
          paths: result.paths.length,
          narFiles: result.narFiles.length,
          bytes: result.bytesFreed,
          error: null,
        });
        return result;
      } catch (err) {
        await this.#repo
          .finishRun(runId, {
            at: this.#now(),
            paths: 0,
            narFiles: 0,
            bytes: 0,
            error: err instanceof Error ? err.message : String(err),
          })
          .catch(() => {});
        throw err;
      } finally {
        await this.#repo.releaseLease(row.id, this.#holder).catch(() => {});
      }
    } finally {
      this.#running.delete(row.id);
    }
  }

  #busy(row: CacheRow, holder: string | null): CairnError {
    return new CairnError(
      'CONFLICT',
      `Cannot collect cache '${row.name}': a collection of it is running${holder ? ` (on ${holder})` : ''}; try again when it ends`,
    );
  }

  async #plan(row: CacheRow, dryRun: boolean) {
    const startedAt = this.#now();
    await this.#cache.flushTouches();
    const paths = await this.#repo.paths(row.id);
    const narFiles = await this.#repo.narFiles(row.id);
    const roots = new Set<string>(await this.#repo.pinnedHashParts(row.id, startedAt));
    for (const p of await this.#repo.deploymentRoots(row.workspace_id)) roots.add(hashPartOf(p));
    const retentionSeconds = CacheCollector.retentionOf(row);
    const plan = await planCollection({
      paths,
      roots,
      now: startedAt,
      retentionMs: retentionSeconds * 1000,
      quotaBytes: row.quota_bytes,
    });
    const removed = new Set(plan.remove.map((r) => r.path.hashPart));
    const used = new Set<string>();
    const freed = new Set<string>();
    for (const p of paths.values()) (removed.has(p.hashPart) ? freed : used).add(p.fileName);
    // A file the plan frees was complete (a narinfo named it): it goes unless uploaded anew since.
    // One no narinfo names may be an upload whose narinfo is still to come: it waits out the grace.
    const graceCutoff = startedAt - this.#uploadGraceMs;
    const files = narFiles
      .filter((f) => !used.has(f.fileName))
      .map((f) => ({ ...f, cutoff: freed.has(f.fileName) ? startedAt : graceCutoff }))
      .filter((f) => f.createdAt < f.cutoff);
    const result: GcResult = {
      cache: row.name,
      dryRun,
      startedAt,
      finishedAt: this.#now(),
      retentionSeconds,
      quotaBytes: row.quota_bytes,
      paths: plan.remove.map((r) => ({
        storePath: r.path.storePath,
        reason: r.reason,
        fileSize: r.path.fileSize,
        narSize: r.path.narSize,
      })),
      narFiles: files.map((f) => ({ fileName: f.fileName, fileSize: f.fileSize })),
      bytesFreed: sum(files),
      rootPaths: plan.rootPaths,
      keptPaths: paths.size - plan.remove.length,
      bytesKept: plan.bytesKept,
      spared: 0,
    };
    return { result, graph: paths, order: plan.remove.map((r) => r.path), files };
  }

  async #run(row: CacheRow): Promise<GcResult> {
    const planned = await this.#plan(row, false);
    const { graph, order } = planned;
    const { startedAt } = planned.result;
    const spared = new Set<string>();
    const removedPaths: GcResult['paths'][number][] = [];
    const planEntry = new Map(planned.result.paths.map((p) => [p.storePath, p]));
    for (let i = 0; i < order.length; i += BATCH) {
      await letOthersIn();
      await this.#renewLease(row);
      await this.#cache.flushTouches();
      const batch = order.slice(i, i + BATCH);
      const gone = await this.#cache.whileNotRead(row.id, () =>
        this.#repo.withCacheLock(row.id, 'exclusive', async (trx) => {
          // Forgotten first: from now on a read of one of them is not answered from memory but
          // from the database, which (on SQLite) waits for this transaction to end. The fetches
          // answered until now are in the touches read below, after every await but the delete.
          this.#cache.forgetNarinfos(
            row.id,
            batch.map((p) => p.hashPart),
          );
          // Whatever was published, fetched, pinned or deployed since the plan keeps its closure.
          // Fetches are recorded to the second (BinaryCache.touch): one in the second the plan
          // began may be recorded as earlier than the plan, so the second counts whole.
          const fresh = await this.#repo.usedSince(trx, row.id, Math.floor(startedAt / 1000) * 1000);
          const extra = new Map(fresh.map((f) => [f.hashPart, f.refs]));
          const from: string[] = [...extra.keys()];
          for (const h of await this.#repo.pinnedHashParts(row.id, startedAt, startedAt, trx)) from.push(h);
          for (const p of await this.#repo.deploymentRoots(row.workspace_id, startedAt, trx)) {
            from.push(hashPartOf(p));
          }
          from.push(...this.#cache.touchedHashParts(row.id));
          for (const h of closureWith(graph, extra, from)) spared.add(h);
          const doomed = batch.filter((p) => !spared.has(p.hashPart)).map((p) => p.hashPart);
          await this.#repo.deletePaths(trx, row.id, doomed);
          return doomed;
        }),
      );
      // Again after the commit: a read from the database that began before it is not remembered.
      this.#cache.forgetNarinfos(row.id, gone);
      this.#onRemoved(row.id);
      const goneSet = new Set(gone);
      for (const p of batch) if (goneSet.has(p.hashPart)) removedPaths.push(planEntry.get(p.storePath)!);
    }
    // NAR files: those planned, checked again under the lock (still unused, not uploaded anew).
    const removedFiles: GcNarFile[] = [];
    const byName = new Map(planned.files.map((f) => [f.fileName, f]));
    for (let i = 0; i < planned.files.length; i += FILE_BATCH) {
      await letOthersIn();
      await this.#renewLease(row);
      const chunk = planned.files.slice(i, i + FILE_BATCH);
      const gone = await this.#cache.whileNotRead(row.id, () =>
        this.#repo.withCacheLock(row.id, 'exclusive', async (trx) => {
          // Not one asked for since the collection began: Nix HEADs a NAR, skips uploading it
          // when it exists, and publishes the narinfo naming it next.
          const read = this.#cache.narFilesReadSince(row.id, planned.result.startedAt);
          const removable = (await this.#repo.removableNarFiles(trx, row.id, chunk)).filter(
            (n) => !read.has(n),
          );
          // The blobs go first, inside the lock: an upload of the same file makes its blob visible
          // and records it under the lock too, so it never ends recorded with its blob removed.
          await this.#cache.deleteNarBlobs(row, removable);
          await this.#repo.deleteNarFiles(trx, row.id, removable);
          return removable;
        }),
      );
      for (const n of gone) removedFiles.push(byName.get(n)!);
    }
    return {
      ...planned.result,
      paths: removedPaths,
      narFiles: removedFiles.map((f) => ({ fileName: f.fileName, fileSize: f.fileSize })),
      bytesFreed: sum(removedFiles),
      keptPaths: graph.size - removedPaths.length,
      spared: order.length - removedPaths.length,
      finishedAt: this.#now(),
    };
  }

  async #renewLease(row: CacheRow): Promise<void> {
    const now = this.#now();
    if (!(await this.#repo.claimLease(row.id, this.#holder, now, now + LEASE_MS))) {
      throw new CairnError(
        'CONFLICT',
        `Cannot go on collecting cache '${row.name}': its lease was taken over`,
      );
    }
  }
}

/**
 * Lets requests waiting for the database go before the next batch. Kysely's SQLite connection
 * lock is not first come, first served: without this, batch after batch took the one connection
 * and every read needing it (a token lookup, a NAR's size) waited for the whole collection
 * (bench:cache-gc: all readers stalled 8 s at 100,000 paths).
 */
function letOthersIn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function sum(files: ReadonlyArray<{ fileSize: number }>): number {
  let n = 0;
  for (const f of files) n += f.fileSize;
  return n;
}

function hashPartOf(storePath: string): string {
  try {
    return parseStorePath(storePath).hashPart;
  } catch {
    return '';
  }
}

/** The closure of `from` over the planned graph plus what was published since (`extra`). */
function closureWith(
  graph: ReadonlyMap<string, GcPath>,
  extra: ReadonlyMap<string, readonly string[]>,
  from: readonly string[],
): Set<string> {
  const seen = new Set<string>();
  const stack = [...from];
  while (stack.length > 0) {
    const h = stack.pop() as string;
    if (seen.has(h)) continue;
    seen.add(h);
    for (const r of graph.get(h)?.refs ?? []) if (!seen.has(r)) stack.push(r);
    for (const r of extra.get(h) ?? []) if (!seen.has(r)) stack.push(r);
  }
  return seen;
}

/**
 * Collects every cache every `intervalMs` (the first round one interval after start), on one
 * replica at a time per cache (the lease; a cache another replica is collecting is skipped).
 * Failures are logged and tried again at the next round.
 */
export function startCacheCollection(deps: {
  collector: CacheCollector;
  caches: () => Promise<CacheRow[]>;
  intervalMs: number;
  log: { info(o: object, m: string): void; error(o: object, m: string): void };
}): { stop(): Promise<void> } {
  let round: Promise<void> = Promise.resolve();
  const timer =
    deps.intervalMs > 0
      ? setInterval(() => {
          round = round.then(async () => {
            let rows: CacheRow[];
            try {
              rows = await deps.caches();
            } catch (err) {
              deps.log.error({ err }, 'cannot list the caches to collect');
              return;
            }
            for (const row of rows) {
              try {
                const r = await deps.collector.collect(row, { dryRun: false, trigger: 'schedule' });
                if (r.paths.length + r.narFiles.length > 0) {
                  deps.log.info(
                    {
                      cache: row.name,
                      paths: r.paths.length,
                      narFiles: r.narFiles.length,
                      bytesFreed: r.bytesFreed,
                    },
                    'collected cache garbage',
                  );
                }
              } catch (err) {
                if (err instanceof CairnError && err.code === 'CONFLICT') continue;
                deps.log.error({ err, cache: row.name }, 'cannot collect cache garbage');
              }
            }
          });
        }, deps.intervalMs)
      : undefined;
  timer?.unref();
  return {
    stop: async () => {
      if (timer) clearInterval(timer);
      await round;
    },
  };
}
