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
  missing: c.missing,
});

/**
 * The package-level diff between the closures of two deployments' store paths. `from` may be
 * undefined (an agent's first deployment): everything is then added.
 */
export async function diffDeployments(
  repo: ClosureRepository,
  from: DeploymentRow | undefined,
  to: DeploymentRow,
): Promise<DeploymentDiff> {
  const before = from ? await knownClosure(repo, from.workspace_id, from.store_path) : NO_CLOSURE;
  const after = await knownClosure(repo, to.workspace_id, to.store_path);
  return {
    from: describe(from, before),
    to: describe(to, after),
    diff: diffClosures(before.infos, after.infos) as DeploymentDiff['diff'],
  };
}
