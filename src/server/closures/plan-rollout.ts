import { CairnError } from '../../lib/cairn-error.ts';
import { diffClosures } from '../../nix/closure-diff.ts';
import type { RolloutPlan } from '../../protocol/api-schemas.ts';
import type { DeployJson } from '../../protocol/deploy-json.ts';
import { validationError } from '../../protocol/parse-or-throw.ts';
import { canActivate } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { ClosureRepository } from './closure-repository.ts';
import { knownClosure } from './known-closure.ts';

/**
 * What activating a deploy.json would do, changing nothing: per agent, the diff between the
 * closure it runs now and the proposed one (each as the caches verified it, else as that agent
 * itself reported it, see `knownClosure`), and what it would download. Problems (unknown agents, agents the token may not deploy to)
 * are reported together, as `deploy activate` does.
 */
export async function planRollout(
  deps: { agents: AgentRepository; closures: ClosureRepository },
  request: { principal: Principal; workspaceId: number; deploy: DeployJson },
): Promise<RolloutPlan> {
  const { principal, workspaceId, deploy } = request;
  const names = Object.keys(deploy.agents).sort();
  const rows = new Map((await deps.agents.byNames(workspaceId, names)).map((r) => [r.name, r]));
  const denied = names.filter((n) => !canActivate(principal, n));
  if (denied.length > 0) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot plan the deployment: token '${principal.tokenName}' may not deploy to ${denied.map((n) => `'${n}'`).join(', ')}`,
    );
  }
  const problems: Array<{ field: string; message: string }> = [];
  for (const n of names) {
    if (!rows.has(n)) problems.push({ field: `agents.${n}`, message: `unknown agent '${n}'` });
  }
  if (problems.length > 0) throw validationError('plan the deployment', problems);
  const plans: RolloutPlan['agents'] = [];
  for (const name of names) {
    const agent = rows.get(name)!;
    const proposedPath = deploy.agents[name]!;
    const viewer = { agentId: agent.id, agentName: name };
    const current = await knownClosure(deps.closures, workspaceId, agent.store_path, viewer);
    const proposed = await knownClosure(deps.closures, workspaceId, proposedPath, viewer);
    const downloads = [...proposed.infos].filter(([p]) => !current.infos.has(p));
    const fileSizes = await deps.closures.fileSizes(
      workspaceId,
      downloads.map(([p]) => p),
    );
    let fileSize = 0;
    for (const size of fileSizes.values()) fileSize += size;
    plans.push({
      agent: name,
      current: {
        deploymentId: null,
        agent: name,
        storePath: agent.store_path,
        source: current.source,
        reportedBy: current.reportedBy,
        missing: current.missing,
      },
      proposed: {
        deploymentId: null,
        agent: name,
        storePath: proposedPath,
        source: proposed.source,
        reportedBy: proposed.reportedBy,
        missing: proposed.missing,
      },
      unchanged: agent.store_path === proposedPath,
      diff: diffClosures(current.infos, proposed.infos) as RolloutPlan['agents'][number]['diff'],
      download: {
        paths: downloads.length,
        narSize: downloads.reduce((sum, [, info]) => sum + info.narSize, 0),
        fileSize,
        filePaths: fileSizes.size,
      },
    });
  }
  return { agents: plans };
}
