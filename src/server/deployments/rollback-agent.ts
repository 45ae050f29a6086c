import { CairnError } from '../../lib/cairn-error.ts';
import { canActivate } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { ServerMetrics } from '../metrics/server-metrics.ts';
import { type ActivateDeps, activateRollout } from './activate-rollout.ts';

/** What {@link rollbackAgent} needs: what a rollout needs, and the audit log. */
export interface RollbackDeps extends ActivateDeps {
  readonly audit: AuditRepository;
  /** Counts the rollbacks asked for (`cairn_rollbacks_total{reason="requested"}`). */
  readonly metrics?: Pick<ServerMetrics, 'rollbacksCreated'> | undefined;
}

/** Who asks for a rollback, of which agent, and to what. */
export interface RollbackRequest {
  readonly principal: Principal;
  readonly workspaceId: number;
  readonly agent: string;
  /** A deployment of the agent whose store path to go back to; the one before the newest succeeded one if absent. */
  readonly to?: number | undefined;
  /** The client's address, for the audit log. */
  readonly address: string;
}

/**
 * Rolls an agent back to what it ran before its newest succeeded deployment (or to the store
 * path of deployment `to`): itself a rollout of kind `rollback`, with its own logs, recorded in
 * the audit log as `agent.rollback`. The one way to roll back, for the API and the dashboard.
 * @throws CairnError FORBIDDEN when the principal may not deploy to the agent, NOT_FOUND for an
 * unknown agent or deployment, INVALID_ARGUMENT when there is nothing to go back to.
 */
export async function rollbackAgent(
  deps: RollbackDeps,
  request: RollbackRequest,
): Promise<{ rolloutId: number; deployments: Array<{ id: number; agent: string }> }> {
  const { principal, workspaceId, agent: name, to } = request;
  // Authorization first: a token that may not deploy learns nothing about the agent.
  if (!canActivate(principal, name)) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot roll back '${name}': token '${principal.tokenName}' may not deploy to it`,
    );
  }
  const agent = await deps.agents.byName(workspaceId, name);
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
  const created = await activateRollout(deps, {
    principal,
    workspaceId,
    deploy: { agents: { [name]: target.store_path } },
    kind: 'rollback',
  });
  deps.metrics?.rollbacksCreated('requested', created.deployments.length);
  await deps.audit.record(
    {
      workspaceId,
      tokenId: principal.tokenId,
      tokenName: principal.tokenName,
      action: 'agent.rollback',
      target: String(created.rolloutId),
      address: request.address,
      detail: { agents: { [name]: target.store_path } },
    },
    deps.now(),
  );
  return created;
}
