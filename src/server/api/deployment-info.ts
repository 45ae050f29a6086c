import type { DeploymentInfo } from '../../protocol/api-schemas.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';
import { agentRolloutState } from '../rollouts/rollout-snapshot.ts';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * A deployment row as the API shows it; `previousClosureSize`, when the caller looked it up, is
 * the closure size of what the agent ran before it.
 */
export function toDeploymentInfo(d: DeploymentRow, previousClosureSize?: number | null): DeploymentInfo {
  return {
    id: d.id,
    rolloutId: d.rollout_id,
    agent: d.agent_name,
    storePath: d.store_path,
    kind: d.kind,
    state: d.state,
    step: d.step,
    reason: d.reason,
    rebootRequired: d.reboot_required === 1,
    createdAt: new Date(d.created_at).toISOString(),
    startedAt: iso(d.started_at),
    finishedAt: iso(d.finished_at),
    batch: d.batch,
    rolloutState:
      d.batch === null
        ? null
        : agentRolloutState({
            state: d.state,
            outcome: d.outcome,
            dispatchedAt: d.dispatched_at,
            deferredAt: d.deferred_at,
            counted: d.counted === 1,
          }),
    closureSize: d.closure_nar_size === null ? null : Number(d.closure_nar_size),
    ...(previousClosureSize === undefined ? {} : { previousClosureSize }),
  };
}
