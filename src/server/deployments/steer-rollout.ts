import { CairnError } from '../../lib/cairn-error.ts';
import { canActivate } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { RolloutOperation } from '../rollouts/operate-rollout.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';

/** What {@link steerRollout} needs. */
export interface SteerDeps {
  readonly deployments: Pick<DeploymentRepository, 'byRollout'>;
  readonly rollouts: Pick<RolloutEngine, 'operate'>;
  readonly audit: AuditRepository;
  readonly now: () => number;
}

/** Who pauses, resumes, promotes or aborts which rollout, from where. */
export interface SteerRequest {
  readonly principal: Principal;
  readonly workspaceId: number;
  readonly rolloutId: number;
  readonly operation: RolloutOperation;
  /** The client's address, for the audit log. */
  readonly address: string;
}

/** The agents among `agents` the principal may not deploy to: it may steer a rollout only when none. */
export function agentsDenied(principal: Principal, agents: Iterable<string>): string[] {
  return [...new Set(agents)].filter((n) => !canActivate(principal, n));
}

/**
 * Pauses, resumes, promotes or aborts a staged rollout for a person, and records it in the audit
 * log as `rollout.<op>`. The one way to steer a rollout, for the API and the dashboard.
 * @throws CairnError NOT_FOUND for an unknown rollout, FORBIDDEN when the principal may not deploy
 * to every agent of the rollout, CONFLICT when the rollout is not staged or its state forbids it.
 */
export async function steerRollout(deps: SteerDeps, request: SteerRequest): Promise<void> {
  const { principal, workspaceId, rolloutId: id, operation: o } = request;
  const action = `${o.op} a rollout`;
  const rows = await deps.deployments.byRollout(workspaceId, id);
  if (rows.length === 0) throw new CairnError('NOT_FOUND', `Cannot find rollout '${id}'`);
  const denied = agentsDenied(
    principal,
    rows.map((r) => r.agent_name),
  );
  if (denied.length > 0) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot ${action}: token '${principal.tokenName}' may not deploy to ${denied
        .slice(0, 5)
        .map((n) => `'${n}'`)
        .join(', ')}${denied.length > 5 ? ', …' : ''}`,
    );
  }
  const done = await deps.rollouts.operate(workspaceId, id, o, principal.tokenName);
  if (!done) {
    throw new CairnError('CONFLICT', `Cannot ${o.op} rollout ${id}: it is not staged (it deployed at once)`);
  }
  await deps.audit.record(
    {
      workspaceId,
      tokenId: principal.tokenId,
      tokenName: principal.tokenName,
      address: request.address,
      action: `rollout.${o.op}`,
      target: String(id),
      ...(o.op === 'promote' || o.op === 'abort' ? { detail: { ...o } } : {}),
    },
    deps.now(),
  );
}
