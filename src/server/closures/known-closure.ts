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
 * The closure of `root`: the one an agent reported if any (exact: it is what the machine
 * holds), else walked breadth-first through what agents reported and the workspace's caches
 * hold, one query per level.
 */
export async function knownClosure(
  repo: ClosureRepository,
  workspaceId: number,
  root: string | null,
): Promise<KnownClosure> {
  if (root === null) return NO_CLOSURE;
  const reported = await repo.closureOf(workspaceId, root);
  if (reported) return { infos: reported, source: 'agent', missing: 0 };
  const walked = await computeClosureBatched([root], (paths) => repo.pathInfos(workspaceId, paths));
  return { infos: walked.infos, source: 'cache', missing: walked.missing.length };
}
