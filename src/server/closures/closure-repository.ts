import type { Kysely } from 'kysely';
import { computeClosureBatched, type PathInfo } from '../../nix/closure.ts';
import { STORE_DIR } from '../../nix/store-path.ts';
import type { ClosurePath } from '../../protocol/agent-protocol.ts';
import { closureDigest, pathDigest } from '../db/closure-digest.ts';
import type { Database } from '../db/database-schema.ts';

/** How many values go into one `IN (...)` list; SQLite allows 32766 bound parameters. */
const IN_CHUNK = 500;
/** Complete closures whose size {@link ClosureRepository} remembers. */
const KNOWN_MAX = 1000;
/** Deployments whose report came in parts that {@link ClosureRepository} remembers. */
const STAGED_MAX = 100_000;
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

/** A complete reported closure: its row, and the size deployments that reported it are given. */
interface KnownReport {
  readonly closureId: number;
  readonly narSize: number;
}

/**
 * Stores the closures agents report, each as its agent's own (issue #23): a deployment points at
 * the closure its agent reported for it, and a report never changes what another agent's
 * deployments point at. Reports of the same content share their rows: each distinct path row
 * (path, NAR size, references) once, each distinct closure of a root once per workspace. A
 * fleet of identical machines, or a redeploy or rollback, stores its closure once; an agent
 * that lies about a closure gets rows of its own that no one else's diff or plan reads.
 */
export class ClosureRepository {
  /**
   * Complete closures by workspace, root and content digest (at most {@link KNOWN_MAX}): a fleet
   * of identical machines reports the same closure thousands of times, and a report (in one
   * message) of a known one needs only its deployment pointed at it, which {@link #linkSoon}
   * coalesces into one statement for the reports arriving meanwhile. A closure's content never
   * changes, so what is remembered here cannot go stale; its size is the one recorded with it
   * (the caches' when they held the whole closure then, else the report's).
   */
  readonly #known = new Map<string, KnownReport>();
  /** Per closure: the deployments waiting to be pointed at it, and the update running. */
  readonly #links = new Map<
    number,
    { next?: Promise<void> | undefined; ids: number[]; running?: Promise<void> | undefined }
  >();
  /** Deployments whose report came in parts and is not complete: their last part is not the whole report. */
  readonly #staged = new Set<number>();

  /**
   * Per root: the report being recorded. Reports of one root wait for each other: ten thousand
   * identical machines reporting at once then find the closure the first one recorded
   * ({@link #known}) instead of each running the transaction that records it.
   */
  readonly #recording = new Map<string, Promise<unknown>>();

  constructor(private readonly db: Kysely<Database>) {}

  /**
   * Records one part of the closure of `root` as the agent of deployment `deploymentId`
   * reported it. With `final`, checks that the root is among the paths, marks the report
   * complete (sharing the rows of an identical report), and records its NAR size on the
   * deployment: as the caches verified it when they hold the whole closure (then on every
   * deployment to the root still lacking one), else as reported. A deployment whose report is
   * complete keeps it. Returns the closure's size when this report recorded new content, else
   * undefined.
   */
  async recordPart(input: {
    workspaceId: number;
    deploymentId: number;
    root: string;
    paths: readonly ClosurePath[];
    final: boolean;
    now: number;
  }): Promise<ClosureSize | undefined> {
    const key = `${input.workspaceId}\0${input.root}`;
    // A report in one message (the usual case) can be matched to a known closure without a write.
    const digest =
      input.final && !this.#staged.has(input.deploymentId) ? reportDigest(input.paths) : undefined;
    for (;;) {
      const known = digest === undefined ? undefined : this.#known.get(`${key}\0${digest}`);
      if (known) {
        await this.#linkSoon(known, input.deploymentId);
        return undefined;
      }
      const busy = this.#recording.get(key);
      if (!busy) break;
      await busy.catch(() => {});
    }
    const recording = this.#recordWithRetry(key, input, digest);
    this.#recording.set(key, recording);
    try {
      return await recording;
    } finally {
      if (this.#recording.get(key) === recording) this.#recording.delete(key);
    }
  }

  /**
   * {@link #record}, once more if it fails: two replicas completing identical reports at the
   * same moment collide on the closure's unique content; the second attempt finds the first's.
   */
  async #recordWithRetry(
    key: string,
    input: RecordInput,
    digest: string | undefined,
  ): Promise<ClosureSize | undefined> {
    try {
      return await this.#record(key, input, digest);
    } catch {
      return await this.#record(key, input, digest);
    }
  }

  /** {@link recordPart} of a report not matched to a known closure. */
  async #record(
    key: string,
    input: RecordInput,
    digest: string | undefined,
  ): Promise<ClosureSize | undefined> {
    const { workspaceId, deploymentId, root } = input;
    // What the caches verified of this closure, when they hold all of it, is what deployments
    // are sized by: an agent's report says what is on its machine, not what others will get.
    const verified = input.final ? await this.#verifiedSize(workspaceId, root) : undefined;
    const outcome = await this.db.transaction().execute(async (trx) => {
      const deployment = await trx
        .selectFrom('deployments')
        .leftJoin('closures', 'closures.id', 'deployments.closure_id')
        .select(['deployments.closure_id', 'closures.complete'])
        .where('deployments.id', '=', deploymentId)
        .executeTakeFirst();
      if (!deployment) return undefined;
      let closureId = deployment.closure_id;
      if (closureId !== null && deployment.complete === 1) return undefined;
      if (closureId === null) {
        if (digest !== undefined) {
          const existing = await findComplete(trx, workspaceId, root, digest);
          if (existing) {
            const known = { closureId: existing.id, narSize: verified?.narSize ?? Number(existing.nar_size) };
            await link(trx, known, [deploymentId]);
            return { known, digest, size: undefined };
          }
        }
        const row = await trx
          .insertInto('closures')
          .values({ workspace_id: workspaceId, root, created_at: input.now })
          .returning('id')
          .executeTakeFirstOrThrow();
        closureId = row.id;
        await trx
          .updateTable('deployments')
          .set({ closure_id: closureId })
          .where('id', '=', deploymentId)
          .execute();
      }
      const [held] = await trx
        .selectFrom('closure_members')
        .select((eb) => eb.fn.countAll<number | string>().as('n'))
        .where('closure_id', '=', closureId)
        .execute();
      // Past the bound the part is dropped, whole: the report stays incomplete, and diffs and
      // plans go on from what the caches hold.
      if (Number(held?.n ?? 0) + input.paths.length > MAX_REPORTED_CLOSURE_PATHS) return undefined;
      for (const part of chunks(input.paths.map(pathRow))) {
        await trx
          .insertInto('closure_paths')
          .values(part)
          .onConflict((oc) => oc.column('digest').doNothing())
          .execute();
        const ids = await trx
          .selectFrom('closure_paths')
          .select('id')
          .where(
            'digest',
            'in',
            part.map((p) => p.digest),
          )
          .execute();
        if (ids.length === 0) continue;
        const target = closureId;
        await trx
          .insertInto('closure_members')
          .values(ids.map((r) => ({ closure_id: target, path_id: r.id })))
          .onConflict((oc) => oc.columns(['closure_id', 'path_id']).doNothing())
          .execute();
      }
      if (!input.final) return undefined;
      const members = await trx
        .selectFrom('closure_members')
        .innerJoin('closure_paths', 'closure_paths.id', 'closure_members.path_id')
        .select(['closure_paths.path', 'closure_paths.nar_size', 'closure_paths.digest'])
        .where('closure_members.closure_id', '=', closureId)
        .execute();
      // A closure without its root is not the closure of that root: keep it incomplete.
      if (!members.some((m) => m.path === root)) return undefined;
      const content = closureDigest(members.map((m) => m.digest));
      const existing = await findComplete(trx, workspaceId, root, content);
      if (existing) {
        // The same as a report recorded before: share it, and drop the copy.
        const known = { closureId: existing.id, narSize: verified?.narSize ?? Number(existing.nar_size) };
        await link(trx, known, [deploymentId]);
        await trx.deleteFrom('closure_members').where('closure_id', '=', closureId).execute();
        await trx.deleteFrom('closures').where('id', '=', closureId).execute();
        return { known, digest: content, size: undefined };
      }
      const reported = {
        paths: members.length,
        narSize: members.reduce((sum, m) => sum + Number(m.nar_size), 0),
      };
      await trx
        .updateTable('closures')
        .set({ complete: 1, digest: content, path_count: reported.paths, nar_size: reported.narSize })
        .where('id', '=', closureId)
        .execute();
      const size = verified ?? reported;
      await link(trx, { closureId, narSize: size.narSize }, [deploymentId]);
      // Verified by the caches: the size of every deployment to the root, whoever reported it.
      if (verified) await recordVerifiedSize(trx, workspaceId, root, verified.narSize);
      return { known: { closureId, narSize: size.narSize }, digest: content, size };
    });
    if (input.final) this.#staged.delete(deploymentId);
    else this.#stage(deploymentId);
    if (!outcome) return undefined;
    this.#remember(`${key}\0${outcome.digest}`, outcome.known);
    return outcome.size;
  }

  /** The size of `root`'s closure as the workspace's caches verified it, if they hold all of it. */
  async #verifiedSize(workspaceId: number, root: string): Promise<ClosureSize | undefined> {
    const walked = await computeClosureBatched([root], (paths) => this.cachedPathInfos(workspaceId, paths));
    if (walked.missing.length > 0) return undefined;
    let narSize = 0;
    for (const info of walked.infos.values()) narSize += info.narSize;
    return { paths: walked.infos.size, narSize };
  }

  #remember(key: string, known: KnownReport): void {
    if (this.#known.size >= KNOWN_MAX) {
      const oldest = this.#known.keys().next();
      if (!oldest.done) this.#known.delete(oldest.value);
    }
    this.#known.set(key, known);
  }

  /** Remembers a deployment whose report came in parts (bounded: an agent may never finish one). */
  #stage(deploymentId: number): void {
    if (this.#staged.size >= STAGED_MAX) {
      const oldest = this.#staged.values().next();
      if (!oldest.done) this.#staged.delete(oldest.value);
    }
    this.#staged.add(deploymentId);
  }

  /**
   * Points a deployment without a report at a known closure, in one statement for all the
   * reports of it that arrive before the statement starts: a report joins the update not yet
   * started, or queues one after the running update.
   */
  #linkSoon(known: KnownReport, deploymentId: number): Promise<void> {
    let slot = this.#links.get(known.closureId);
    if (!slot) {
      slot = { ids: [] };
      this.#links.set(known.closureId, slot);
    }
    const entry = slot;
    if (entry.next) {
      entry.ids.push(deploymentId);
      return entry.next;
    }
    const ids = [deploymentId];
    entry.ids = ids;
    const after = entry.running ?? Promise.resolve();
    const next: Promise<void> = after
      .catch(() => {})
      .then(() => {
        entry.next = undefined;
        entry.running = next;
        return link(this.db, known, ids, { onlyUnreported: true });
      })
      .finally(() => {
        if (entry.running === next) entry.running = undefined;
        if (!entry.running && !entry.next) this.#links.delete(known.closureId);
      });
    entry.next = next;
    return next;
  }

  /**
   * The complete closure of `root` that `agentId` reported: the one reported for deployment
   * `deploymentId` when given and reported, else the newest the agent reported; undefined when
   * it reported none. Never another agent's report.
   */
  async reportedClosure(
    workspaceId: number,
    agentId: number,
    root: string,
    deploymentId?: number,
  ): Promise<Map<string, PathInfo> | undefined> {
    const rows = await this.db
      .selectFrom('deployments')
      .innerJoin('closures', 'closures.id', 'deployments.closure_id')
      .select(['deployments.id', 'deployments.closure_id'])
      .where('deployments.workspace_id', '=', workspaceId)
      .where('deployments.agent_id', '=', agentId)
      .where('deployments.store_path', '=', root)
      .where('closures.complete', '=', 1)
      .orderBy('deployments.id', 'desc')
      .execute();
    const chosen = rows.find((r) => r.id === deploymentId) ?? rows[0];
    if (!chosen || chosen.closure_id === null) return undefined;
    const members = await this.db
      .selectFrom('closure_members')
      .innerJoin('closure_paths', 'closure_paths.id', 'closure_members.path_id')
      .select(['closure_paths.path', 'closure_paths.nar_size', 'closure_paths.refs'])
      .where('closure_members.closure_id', '=', chosen.closure_id)
      .execute();
    return new Map(members.map((r) => [r.path, toPathInfo(r)]));
  }

  /**
   * The closure size recorded for `agentId` running `root` (its newest deployment to it that has
   * one): as the caches verified it, else as that agent reported it.
   */
  async sizeFor(agentId: number, root: string): Promise<number | undefined> {
    const row = await this.db
      .selectFrom('deployments')
      .select('closure_nar_size')
      .where('agent_id', '=', agentId)
      .where('store_path', '=', root)
      .where('closure_nar_size', 'is not', null)
      .orderBy('id', 'desc')
      .limit(1)
      .executeTakeFirst();
    return row?.closure_nar_size === undefined || row.closure_nar_size === null
      ? undefined
      : Number(row.closure_nar_size);
  }

  /**
   * {@link sizeFor} of many (agent, root) pairs at once, by `${agentId} ${root}`: the summary of
   * a rollout to 10,000 agents makes one query per 500 agents, not one per agent.
   */
  async sizesFor(pairs: ReadonlyArray<{ agentId: number; root: string }>): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const wanted = new Set(pairs.map((p) => `${p.agentId} ${p.root}`));
    const agents = [...new Set(pairs.map((p) => p.agentId))];
    const roots = [...new Set(pairs.map((p) => p.root))];
    for (const part of chunks(agents)) {
      for (const rootPart of chunks(roots)) {
        const rows = await this.db
          .selectFrom('deployments')
          .select(['agent_id', 'store_path', 'closure_nar_size'])
          .where('agent_id', 'in', part)
          .where('store_path', 'in', rootPart)
          .where('closure_nar_size', 'is not', null)
          .orderBy('id', 'desc')
          .execute();
        for (const r of rows) {
          const key = `${r.agent_id} ${r.store_path}`;
          if (wanted.has(key) && !out.has(key)) out.set(key, Number(r.closure_nar_size));
        }
      }
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
   * from what `agentId` itself reported (none without it), for `computeClosureBatched`: a path
   * a machine substituted from elsewhere (cache.nixos.org) is known once it reported it. An
   * agent's report never overrides what a cache verified, and another agent's is never used.
   * `reported` collects the paths taken from the report.
   */
  async pathInfos(
    workspaceId: number,
    paths: readonly string[],
    agentId: number | undefined,
    reported: Set<string>,
  ): Promise<Map<string, PathInfo>> {
    const out = await this.cachedPathInfos(workspaceId, paths);
    if (agentId === undefined) return out;
    const rest = paths.filter((p) => !out.has(p));
    for (const part of chunks(rest)) {
      const rows = await this.db
        .selectFrom('deployments')
        .innerJoin('closure_members', 'closure_members.closure_id', 'deployments.closure_id')
        .innerJoin('closure_paths', 'closure_paths.id', 'closure_members.path_id')
        .select(['closure_paths.path', 'closure_paths.nar_size', 'closure_paths.refs'])
        .where('deployments.workspace_id', '=', workspaceId)
        .where('deployments.agent_id', '=', agentId)
        .where('closure_paths.path', 'in', part)
        .orderBy('deployments.id', 'desc')
        .execute();
      for (const r of rows) {
        if (out.has(r.path)) continue;
        out.set(r.path, toPathInfo(r));
        reported.add(r.path);
      }
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

/** What {@link ClosureRepository.recordPart} takes. */
type RecordInput = Parameters<ClosureRepository['recordPart']>[0];

/** A reported path as its row, with the digest that identifies its content. */
function pathRow(p: ClosurePath) {
  const refs = p.references.map(baseName).sort().join(' ');
  return { path: p.path, nar_size: p.narSize, refs, digest: pathDigest(p.path, p.narSize, refs) };
}

/** The content digest of a report sent whole, as the database computes it once recorded. */
function reportDigest(paths: readonly ClosurePath[]): string {
  return closureDigest(paths.map((p) => pathRow(p).digest));
}

/** The complete closure of `root` with this content, if one was recorded. */
function findComplete(db: Kysely<Database>, workspaceId: number, root: string, digest: string) {
  return db
    .selectFrom('closures')
    .select(['id', 'nar_size'])
    .where('workspace_id', '=', workspaceId)
    .where('root', '=', root)
    .where('digest', '=', digest)
    .where('complete', '=', 1)
    .executeTakeFirst();
}

/**
 * Points these deployments at a complete closure and gives them its size; with
 * `onlyUnreported`, only those without a report of their own yet.
 */
async function link(
  db: Kysely<Database>,
  known: KnownReport,
  ids: readonly number[],
  options: { onlyUnreported?: boolean } = {},
): Promise<void> {
  for (const part of chunks(ids)) {
    let update = db
      .updateTable('deployments')
      .set({ closure_id: known.closureId, closure_nar_size: known.narSize })
      .where('id', 'in', part);
    if (options.onlyUnreported) update = update.where('closure_id', 'is', null);
    await update.execute();
  }
}

/** Sets the verified closure size on the deployments to `root` that lack one. */
async function recordVerifiedSize(
  db: Kysely<Database>,
  workspaceId: number,
  root: string,
  narSize: number,
): Promise<void> {
  await db
    .updateTable('deployments')
    .set({ closure_nar_size: narSize })
    .where('workspace_id', '=', workspaceId)
    .where('store_path', '=', root)
    .where('closure_nar_size', 'is', null)
    .execute();
}

function toPathInfo(r: { nar_size: number; refs: string }): PathInfo {
  return {
    narSize: Number(r.nar_size),
    references: r.refs === '' ? [] : r.refs.split(' ').map(fullPath),
  };
}
