import { computeClosureBatched, type PathInfo } from '../../nix/closure.ts';
import type { ClosureRepository } from './closure-repository.ts';

/** A closure as the server knows it, and where that knowledge came from. */
export interface KnownClosure {
  readonly infos: ReadonlyMap<string, PathInfo>;
  /**
   * `cache`: walked through the path index (verified on upload); `agent`: all or part of it as
   * an agent reported it after realising, not verified; `none`: no root.
   */
  readonly source: 'agent' | 'cache' | 'none';
  /** With `agent`: the agent whose report it is (always the viewing agent itself). */
  readonly reportedBy: string | null;
  /** Paths the walk could not find: the closure is then a lower bound. */
  readonly missing: number;
}

/** The empty closure, for an agent that runs nothing yet. */
export const NO_CLOSURE: KnownClosure = { infos: new Map(), source: 'none', reportedBy: null, missing: 0 };

/** Whose view a closure is looked up for: an agent, and the deployment of it being shown. */
export interface ClosureViewer {
  readonly agentId: number;
  readonly agentName: string;
  readonly deploymentId?: number;
}

/**
 * The closure of `root` as `viewer` should see it, walked breadth-first (one query per level):
 * as the workspace's caches verified it when they hold all of it (the usual case: a cache
 * refuses a path whose references it lacks), for every agent alike; else as the viewing agent
 * itself reported it, if it did; else walked through the caches and that agent's own reports,
 * caches first.
 *
 * Another agent's report is never used (issue #23): reports of a root may differ (a compromised
 * agent may lie), nothing tells which is true, and a view that followed whichever came first
 * would let one agent change what the diffs and plans of others show. An agent that has not
 * reported a root the caches do not hold whole sees it walked through the caches, as a lower
 * bound (`missing`), rather than someone else's word.
 */
export async function knownClosure(
  repo: ClosureRepository,
  workspaceId: number,
  root: string | null,
  viewer: ClosureViewer,
): Promise<KnownClosure> {
  if (root === null) return NO_CLOSURE;
  const verified = await computeClosureBatched([root], (paths) => repo.cachedPathInfos(workspaceId, paths));
  if (verified.missing.length === 0)
    return { infos: verified.infos, source: 'cache', reportedBy: null, missing: 0 };
  const reported = await repo.reportedClosure(workspaceId, viewer.agentId, root, viewer.deploymentId);
  if (reported) return { infos: reported, source: 'agent', reportedBy: viewer.agentName, missing: 0 };
  const fromReport = new Set<string>();
  const walked = await computeClosureBatched([root], (paths) =>
    repo.pathInfos(workspaceId, paths, viewer.agentId, fromReport),
  );
  const partly = fromReport.size > 0;
  return {
    infos: walked.infos,
    source: partly ? 'agent' : 'cache',
    reportedBy: partly ? viewer.agentName : null,
    missing: walked.missing.length,
  };
}
