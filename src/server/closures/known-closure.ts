import { computeClosureBatched, type PathInfo } from '../../nix/closure.ts';
import type { ClosureRepository } from './closure-repository.ts';

/** A closure as the server knows it, and where that knowledge came from. */
export interface KnownClosure {
  readonly infos: ReadonlyMap<string, PathInfo>;
  /** `agent`: reported after realising; `cache`: walked through the path index; `none`: no root. */
  readonly source: 'agent' | 'cache' | 'none';
  /** Paths the walk could not find: the closure is then a lower bound. */
  readonly missing: number;
}

/** The empty closure, for an agent that runs nothing yet. */
export const NO_CLOSURE: KnownClosure = { infos: new Map(), source: 'none', missing: 0 };

/**
 * The closure of `root`, walked breadth-first (one query per level): as the workspace's caches
 * verified it when they hold all of it (the usual case: a cache refuses a path whose references
 * it lacks); else as an agent reported it, if one did; else walked through both, caches first.
 * An agent's report is used only where no cache can say otherwise, so that a compromised agent
 * cannot change what the diffs and plans of other agents show.
 */
export async function knownClosure(
  repo: ClosureRepository,
  workspaceId: number,
  root: string | null,
): Promise<KnownClosure> {
  if (root === null) return NO_CLOSURE;
  const verified = await computeClosureBatched([root], (paths) => repo.cachedPathInfos(workspaceId, paths));
  if (verified.missing.length === 0) return { infos: verified.infos, source: 'cache', missing: 0 };
  const reported = await repo.closureOf(workspaceId, root);
  if (reported) return { infos: reported, source: 'agent', missing: 0 };
  const walked = await computeClosureBatched([root], (paths) => repo.pathInfos(workspaceId, paths));
  return { infos: walked.infos, source: 'cache', missing: walked.missing.length };
}
