import type { Kysely } from 'kysely';
import { computeClosureBatched, type PathInfo } from '../../nix/closure.ts';
import { STORE_DIR } from '../../nix/store-path.ts';
import type { ClosurePath } from '../../protocol/agent-protocol.ts';
import type { Database } from '../db/database-schema.ts';

/** How many values go into one `IN (...)` list; SQLite allows 32766 bound parameters. */
const IN_CHUNK = 500;
/** Complete closures whose size {@link ClosureRepository} remembers. */
const KNOWN_MAX = 1000;
/**
 * Paths one reported closure may have, over all its parts. A NixOS system has a few thousand;
 * without a bound an agent could send parts without end (each message is bounded, their number
 * is not), and every path is a row.
 */
export const MAX_REPORTED_CLOSURE_PATHS = 250_000;

/** Path count and total NAR size of one closure. */
export interface ClosureSize {
  readonly paths: number;
  readonly narSize: number;
}

const baseName = (path: string) => path.slice(STORE_DIR.length + 1);
const fullPath = (base: string) => `${STORE_DIR}/${base}`;

function chunks<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += IN_CHUNK) out.push(items.slice(i, i + IN_CHUNK));
  return out;
}

/**
 * Stores the closures agents report, compactly: each distinct store path once, each distinct
 * root once per workspace, and which paths belong to which root. Deployments of the same store
 * path (a redeploy, a rollback, a fleet of identical machines) share one closure.
 */
export class ClosureRepository {
  /**
   * The NAR size of closures known complete, by workspace and root (at most {@link KNOWN_MAX}):
   * a fleet of identical machines reports the same closure thousands of times, and each report
   * of a known one needs only the size set on the new deployments, which {@link #sizeWrites}
   * coalesces into one statement per root for the reports arriving meanwhile. A complete
   * closure never changes, so what is remembered here cannot go stale.
   */
  readonly #known = new Map<string, number>();
  /** Per root: the size update waiting to start (joined by later reports), and the one running. */
  readonly #sizeWrites = new Map<
    string,
    { next?: Promise<void> | undefined; running?: Promise<void> | undefined }
  >();

  /**
   * Per root: the report being recorded while the closure is not known complete. Reports of one
   * root wait for each other until it is: ten thousand identical machines reporting at once
   * would otherwise each run the transaction that inserts it, and their size updates of the same
   * ten thousand deployment rows wait for each other's row locks, holding every connection.
   */
  readonly #recording = new Map<string, Promise<unknown>>();

  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Records one part of the closure of `root` as an agent reported it. With `final`, checks that
   * the root is among the paths, marks the closure complete, and records its NAR size on every
   * deployment of the workspace to that root. A closure already complete is left as it is.
   * Returns the closure's size once complete, else undefined.
   */
  async recordPart(input: {
    workspaceId: number;
    root: string;
    paths: readonly ClosurePath[];
    final: boolean;
    now: number;
  }): Promise<ClosureSize | undefined> {
    const key = `${input.workspaceId}\0${input.root}`;
    for (;;) {
      const knownSize = this.#known.get(key);
      if (knownSize !== undefined) {
        await this.#recordSizeSoon(key, input.workspaceId, input.root, knownSize);
        return undefined;
      }
      const busy = this.#recording.get(key);
      if (!busy) break;
      await busy.catch(() => {});
    }
    const recording = this.#recordUnknown(key, input);
    this.#recording.set(key, recording);
    try {
      return await recording;
    } finally {
      if (this.#recording.get(key) === recording) this.#recording.delete(key);
    }
  }

  /** {@link recordPart} of a closure not known complete here. */
  async #recordUnknown(
    key: string,
    input: { workspaceId: number; root: string; paths: readonly ClosurePath[]; final: boolean; now: number },
  ): Promise<ClosureSize | undefined> {
    // What the caches verified of this closure, when they hold all of it, is what deployments
    // are sized by: an agent's report says what is on its machine, not what others will get.
    const verified = input.final ? await this.#verifiedSize(input.workspaceId, input.root) : undefined;
    const size = await this.db.transaction().execute(async (trx) => {
      await trx
        .insertInto('closures')
        .values({ workspace_id: input.workspaceId, root: input.root, created_at: input.now })
        .onConflict((oc) => oc.columns(['workspace_id', 'root']).doNothing())
        .execute();
      const closure = await trx
        .selectFrom('closures')
        .select(['id', 'complete', 'path_count', 'nar_size'])
        .where('workspace_id', '=', input.workspaceId)
        .where('root', '=', input.root)
        .executeTakeFirstOrThrow();
      if (closure.complete === 1) {
        // Known already (a redeploy, a rollback, another machine): only the new deployment needs its size.
        await this.#recordSize(trx, input.workspaceId, input.root, Number(closure.nar_size));
        this.#remember(key, Number(closure.nar_size));
        return undefined;
      }
      const [held] = await trx
        .selectFrom('closure_members')
        .select((eb) => eb.fn.countAll<number | string>().as('n'))
        .where('closure_id', '=', closure.id)
        .execute();
      // Past the bound the report is dropped, whole: the closure stays incomplete, and diffs and
      // plans go on from what the caches hold.
      if (Number(held?.n ?? 0) + input.paths.length > MAX_REPORTED_CLOSURE_PATHS) return undefined;
      for (const part of chunks(input.paths)) {
        await trx
          .insertInto('closure_paths')
          .values(
            part.map((p) => ({
              path: p.path,
              nar_size: p.narSize,
              refs: p.references.map(baseName).sort().join(' '),
            })),
          )
          .onConflict((oc) => oc.column('path').doNothing())
          .execute();
        const ids = await trx
          .selectFrom('closure_paths')
          .select('id')
          .where(
            'path',
            'in',
            part.map((p) => p.path),
          )
          .execute();
        if (ids.length === 0) continue;
        await trx
          .insertInto('closure_members')
          .values(ids.map((r) => ({ closure_id: closure.id, path_id: r.id })))
          .onConflict((oc) => oc.columns(['closure_id', 'path_id']).doNothing())
          .execute();
      }
      if (!input.final) return undefined;
      const totals = await trx
        .selectFrom('closure_members')
        .innerJoin('closure_paths', 'closure_paths.id', 'closure_members.path_id')
        .select((eb) => [
          eb.fn.countAll<number>().as('paths'),
          eb
            .cast<number>(eb.fn.coalesce(eb.fn.sum('closure_paths.nar_size'), eb.lit(0)), 'bigint')
            .as('nar_size'),
          eb.fn
            .sum<number>(eb.case().when('closure_paths.path', '=', input.root).then(1).else(0).end())
            .as('has_root'),
        ])
        .where('closure_members.closure_id', '=', closure.id)
        .executeTakeFirstOrThrow();
      // A closure without its root is not the closure of that root: keep it incomplete.
      if (Number(totals.has_root) === 0) return undefined;
      const size = verified ?? { paths: Number(totals.paths), narSize: Number(totals.nar_size) };
      await trx
        .updateTable('closures')
        .set({ complete: 1, path_count: size.paths, nar_size: size.narSize })
        .where('id', '=', closure.id)
        .execute();
      await this.#recordSize(trx, input.workspaceId, input.root, size.narSize);
      return size;
    });
    if (size) this.#remember(key, size.narSize);
    return size;
  }

  /** The size of `root`'s closure as the workspace's caches verified it, if they hold all of it. */
  async #verifiedSize(workspaceId: number, root: string): Promise<ClosureSize | undefined> {
    const walked = await computeClosureBatched([root], (paths) => this.cachedPathInfos(workspaceId, paths));
    if (walked.missing.length > 0) return undefined;
    let narSize = 0;
    for (const info of walked.infos.values()) narSize += info.narSize;
    return { paths: walked.infos.size, narSize };
  }

  #remember(key: string, narSize: number): void {
    if (this.#known.size >= KNOWN_MAX) {
      const oldest = this.#known.keys().next();
      if (!oldest.done) this.#known.delete(oldest.value);
    }
    this.#known.set(key, narSize);
  }

  /**
   * Sets the size on the deployments to a known-complete root that lack it, in one statement for
   * all the reports that arrive before it starts: a report joins the update not yet started, or
   * queues one after the running update (which may have read the rows before its deployment's).
   */
  #recordSizeSoon(key: string, workspaceId: number, root: string, narSize: number): Promise<void> {
    let slot = this.#sizeWrites.get(key);
    if (!slot) {
      slot = {};
      this.#sizeWrites.set(key, slot);
    }
    const entry = slot;
    if (entry.next) return entry.next;
    const after = entry.running ?? Promise.resolve();
    const next: Promise<void> = after
      .catch(() => {})
      .then(() => {
        entry.next = undefined;
        entry.running = next;
        return this.#recordSize(this.db, workspaceId, root, narSize);
      })
      .finally(() => {
        if (entry.running === next) entry.running = undefined;
        if (!entry.running && !entry.next) this.#sizeWrites.delete(key);
      });
    entry.next = next;
    return next;
  }

  /** Sets the closure size of the deployments to `root` that lack it. */
  async #recordSize(db: Kysely<Database>, workspaceId: number, root: string, narSize: number): Promise<void> {
    await db
      .updateTable('deployments')
      .set({ closure_nar_size: narSize })
      .where('workspace_id', '=', workspaceId)
      .where('store_path', '=', root)
      .where('closure_nar_size', 'is', null)
      .execute();
  }

  /** The complete closure of `root` as reported by an agent, or undefined when none was. */
  async closureOf(workspaceId: number, root: string): Promise<Map<string, PathInfo> | undefined> {
    const closure = await this.db
      .selectFrom('closures')
      .select('id')
      .where('workspace_id', '=', workspaceId)
      .where('root', '=', root)
      .where('complete', '=', 1)
      .executeTakeFirst();
    if (!closure) return undefined;
    const rows = await this.db
      .selectFrom('closure_members')
      .innerJoin('closure_paths', 'closure_paths.id', 'closure_members.path_id')
      .select(['closure_paths.path', 'closure_paths.nar_size', 'closure_paths.refs'])
      .where('closure_members.closure_id', '=', closure.id)
      .execute();
    return new Map(rows.map((r) => [r.path, toPathInfo(r)]));
  }

  /** Sizes of the complete closures of these roots, by root. */
  async sizes(workspaceId: number, roots: readonly string[]): Promise<Map<string, ClosureSize>> {
    const out = new Map<string, ClosureSize>();
    for (const part of chunks([...new Set(roots)])) {
      const rows = await this.db
        .selectFrom('closures')
        .select(['root', 'path_count', 'nar_size'])
        .where('workspace_id', '=', workspaceId)
        .where('complete', '=', 1)
        .where('root', 'in', part)
        .execute();
      for (const r of rows) out.set(r.root, { paths: Number(r.path_count), narSize: Number(r.nar_size) });
    }
    return out;
  }

  /**
   * Path infos of these paths as the workspace's caches verified them (each NAR checked against
   * its narinfo on upload), for `computeClosureBatched`.
   */
  async cachedPathInfos(workspaceId: number, paths: readonly string[]): Promise<Map<string, PathInfo>> {
    const out = new Map<string, PathInfo>();
    for (const part of chunks(paths)) {
      const cached = await this.db
        .selectFrom('store_paths')
        .innerJoin('caches', 'caches.id', 'store_paths.cache_id')
        .select(['store_paths.store_path', 'store_paths.nar_size', 'store_paths.refs'])
        .where('caches.workspace_id', '=', workspaceId)
        .where('store_paths.store_path', 'in', part)
        .execute();
      for (const r of cached) out.set(r.store_path, toPathInfo({ nar_size: r.nar_size, refs: r.refs }));
    }
    return out;
  }

  /**
   * Path infos of these paths, from the workspace's caches first (verified) and, for the rest,
   * from what agents reported, for `computeClosureBatched`: a path a machine substituted from
   * elsewhere (cache.nixos.org) is known once some agent reported it. An agent's report never
   * overrides what a cache verified.
   */
  async pathInfos(workspaceId: number, paths: readonly string[]): Promise<Map<string, PathInfo>> {
    const out = await this.cachedPathInfos(workspaceId, paths);
    const rest = paths.filter((p) => !out.has(p));
    for (const part of chunks(rest)) {
      const reported = await this.db
        .selectFrom('closure_paths')
        .select(['path', 'nar_size', 'refs'])
        .where('path', 'in', part)
        .execute();
      for (const r of reported) out.set(r.path, toPathInfo(r));
    }
    return out;
  }

  /** Compressed download sizes of these paths from the workspace's caches, where known (smallest file). */
  async fileSizes(workspaceId: number, paths: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const part of chunks(paths)) {
      const rows = await this.db
        .selectFrom('store_paths')
        .innerJoin('caches', 'caches.id', 'store_paths.cache_id')
        .select(['store_paths.store_path', 'store_paths.file_size'])
        .where('caches.workspace_id', '=', workspaceId)
        .where('store_paths.store_path', 'in', part)
        .execute();
      for (const r of rows) {
        if (r.file_size === null) continue;
        const size = Number(r.file_size);
        const seen = out.get(r.store_path);
        if (seen === undefined || size < seen) out.set(r.store_path, size);
      }
    }
    return out;
  }
}

function toPathInfo(r: { nar_size: number; refs: string }): PathInfo {
  return {
    narSize: Number(r.nar_size),
    references: r.refs === '' ? [] : r.refs.split(' ').map(fullPath),
  };
}
