import type { RolloutPolicy, RolloutState } from '../../protocol/rollout-policy.ts';

/** A batch's label and gate, as planned when the rollout was made. */
export interface BatchGate {
  readonly label: string;
  readonly advance: 'auto' | 'manual';
}

/** A staged rollout's policy as stored: the policy and the batches planned from it. */
export interface StoredPolicy extends RolloutPolicy {
  readonly plan: readonly BatchGate[];
}

/** A staged rollout's row, as the engine decides from it. */
export interface RolloutSnapshot {
  readonly id: number;
  readonly workspaceId: number;
  readonly state: RolloutState;
  readonly batch: number;
  readonly promotedTo: number;
  readonly batchOpenedAt: number | null;
  readonly pausedAt: number | null;
  readonly resumedAt: number | null;
  readonly acceptedFailed: number;
  readonly acceptedDecided: number;
  readonly revertState: string | null;
  readonly waiting: string | null;
  readonly version: number;
  readonly policy: StoredPolicy;
}

/** One agent's deployment in a staged rollout, with its agent's presence. */
export interface AgentSnapshot {
  readonly deploymentId: number;
  readonly agentId: number;
  readonly agent: string;
  readonly batch: number;
  /** The deployment's own state (pending, running, succeeded, …). */
  readonly state: string;
  readonly reason: string | null;
  readonly dispatchedAt: number | null;
  readonly deferredAt: number | null;
  readonly outcome: string | null;
  readonly counted: boolean;
  readonly startedAt: number | null;
  readonly finishedAt: number | null;
  readonly online: boolean;
  readonly storePath: string;
  readonly previousPath: string | null;
  readonly reverted: boolean;
}

/** Where one agent stands in its rollout, for people and the API. */
export function agentRolloutState(
  a: Pick<AgentSnapshot, 'outcome' | 'state' | 'dispatchedAt' | 'deferredAt' | 'counted'>,
): string {
  if (a.outcome !== null) return a.outcome;
  if (a.state === 'cancelled') return 'cancelled';
  if (a.dispatchedAt === null) return a.deferredAt === null ? 'pending' : 'deferred';
  if (a.state === 'pending') return 'dispatched';
  if (a.state === 'running') return 'activating';
  // Back from being offline, outside the quota and the threshold: no bake decides it, and it
  // may finish after its rollout ended, which would otherwise leave it 'baking' for good.
  if (a.state === 'succeeded') return a.counted ? 'baking' : 'succeeded';
  return 'failed';
}
