import { CairnError } from '../../lib/cairn-error.ts';
import type { Principal } from '../auth/principal.ts';
import { type ActivateDeps, activateRollout } from './activate-rollout.ts';

/**
 * Rolls an agent back to what it ran before its newest succeeded deployment (or to the store
 * path of deployment `to`): itself a rollout of kind `rollback`, with its own logs. The same
 * steps as `POST .../agents/:name/rollback`, for callers outside the JSON API (the dashboard).
 * @throws CairnError NOT_FOUND for an unknown agent or deployment, INVALID_ARGUMENT when there
 * is nothing to go back to, FORBIDDEN (as a validation error) when the principal may not deploy.
 */
export async function rollbackAgent(
  deps: ActivateDeps,
  request: { principal: Principal; workspaceId: number; agent: string; to?: number | undefined },
): Promise<{ rolloutId: number; deployments: Array<{ id: number; agent: string }> }> {
  const { agent: name, to } = request;
  const agent = await deps.agents.byName(request.workspaceId, name);
  if (!agent) throw new CairnError('NOT_FOUND', `Cannot roll back: no agent '${name}'`);
  const target = await deps.deployments.rollbackTarget(agent.id, to);
  if (!target) {
    throw new CairnError(
      to === undefined ? 'INVALID_ARGUMENT' : 'NOT_FOUND',
      to === undefined
        ? `Cannot roll back ${name}: it has no earlier succeeded deployment to go back to`
        : `Cannot roll back ${name}: deployment ${to} is not one of its deployments`,
    );
  }
  return await activateRollout(deps, {
    principal: request.principal,
    workspaceId: request.workspaceId,
    deploy: { agents: { [name]: target.store_path } },
    kind: 'rollback',
  });
}
