import { CairnError } from '../../lib/cairn-error.ts';
import { type Decision, thresholdCounts } from './decide-rollout.ts';
import type { AgentSnapshot, RolloutSnapshot } from './rollout-snapshot.ts';

/** What a person can do to a staged rollout. */
export type RolloutOperation =
  | { readonly op: 'pause' }
  | { readonly op: 'resume' }
  | { readonly op: 'promote'; readonly full: boolean }
  | { readonly op: 'abort'; readonly revert: boolean };

const empty = (): Decision => ({
  rollout: {},
  dispatch: [],
  dispatchUncounted: [],
  defer: [],
  outcomes: [],
  cancel: { ids: [], reason: '' },
  revert: [],
});

function refuse(r: RolloutSnapshot, what: string, hint = ''): never {
  throw new CairnError('CONFLICT', `Cannot ${what} rollout ${r.id}: it is ${r.state}${hint}`);
}

/**
 * The change a person's operation makes, as a decision the store applies with compare-and-set
 * (the engine then decides the rest, such as which batch opens after a promote). Refuses, with
 * CONFLICT, an operation the rollout's state does not allow.
 */
export function operateRollout(
  r: RolloutSnapshot,
  agents: readonly AgentSnapshot[],
  o: RolloutOperation,
  by: string,
  now: number,
): Decision {
  const d = empty();
  const last = r.policy.plan.length - 1;
  switch (o.op) {
    case 'pause':
      if (r.state !== 'running' && r.state !== 'pending') refuse(r, 'pause');
      d.rollout = {
        state: 'paused',
        pausedAt: now,
        reason: `paused by ${by}`,
        waiting: 'paused: nothing is dispatched and no deadline runs until resume',
      };
      return d;
    case 'resume': {
      if (r.state !== 'paused') refuse(r, 'resume', r.state === 'running' ? ' already' : '');
      // Failures that paused the rollout are accepted: the threshold counts from here on.
      const counts = thresholdCounts(agents);
      const pausedFor = now - (r.pausedAt ?? now);
      d.rollout = {
        state: r.batch >= 0 ? 'running' : 'pending',
        reason: null,
        waiting: null,
        resumedAt: now,
        acceptedFailed: counts.failed,
        acceptedDecided: counts.decided,
        // The batch deadline stops while paused.
        ...(r.batchOpenedAt !== null ? { batchOpenedAt: r.batchOpenedAt + pausedFor } : {}),
      };
      return d;
    }
    case 'promote':
      if (r.state === 'paused') refuse(r, 'promote', ': resume it first');
      if (r.state !== 'running' && r.state !== 'pending') refuse(r, 'promote');
      if (r.batch >= last || r.promotedTo >= last) refuse(r, 'promote', ' with its last batch open');
      d.rollout = { promotedTo: o.full ? last : Math.max(r.batch, r.promotedTo) + 1 };
      return d;
    case 'abort':
      if (r.state !== 'running' && r.state !== 'pending' && r.state !== 'paused') refuse(r, 'abort');
      d.rollout = {
        state: 'aborted',
        reason: `aborted by ${by}${o.revert ? ' (reverting the agents it switched)' : ''}`,
        waiting: null,
        finishedAt: now,
        ...(o.revert ? { revertState: 'pending' as const } : {}),
      };
      d.cancel = {
        ids: agents
          .filter((a) => a.dispatchedAt === null && a.state === 'pending')
          .map((a) => a.deploymentId),
        reason: `rollout aborted by ${by}`,
      };
      return d;
  }
}
