import { diffClosures } from '../../nix/closure-diff.ts';
import type { DeploymentDiff } from '../../protocol/api-schemas.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import type { ClosureRepository } from './closure-repository.ts';
import { type KnownClosure, knownClosure, NO_CLOSURE } from './known-closure.ts';

const describe = (d: DeploymentRow | undefined, c: KnownClosure) => ({
  deploymentId: d?.id ?? null,
  agent: d?.agent_name ?? null,
  storePath: d?.store_path ?? null,
  source: c.source,
  reportedBy: c.reportedBy,
  missing: c.missing,
});

/** The closure of a deployment's store path as its own agent sees it. */
const closureOf = (repo: ClosureRepository, d: DeploymentRow) =>
  knownClosure(repo, d.workspace_id, d.store_path, {
    agentId: d.agent_id,
    agentName: d.agent_name,
    deploymentId: d.id,
  });

/**
 * The package-level diff between the closures of two deployments' store paths, each side as its
 * deployment's agent sees it (see {@link knownClosure}). `from` may be undefined (an agent's
 * first deployment): everything is then added.
 */
export async function diffDeployments(
  repo: ClosureRepository,
  from: DeploymentRow | undefined,
  to: DeploymentRow,
): Promise<DeploymentDiff> {
  const before = from ? await closureOf(repo, from) : NO_CLOSURE;
  const after = await closureOf(repo, to);
  return {
    from: describe(from, before),
    to: describe(to, after),
    diff: diffClosures(before.infos, after.infos) as DeploymentDiff['diff'],
  };
}
