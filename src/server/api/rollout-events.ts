import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { isFinalRolloutState } from '../../protocol/rollout-policy.ts';
import { canReadDeployment } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { EventBus } from '../events/event-bus.ts';
import { followDeployments } from '../events/follow-deployments.ts';
import { onRevocation } from '../events/on-revocation.ts';
import type { RolloutStore } from '../rollouts/rollout-store.ts';
import { stagedStatus } from '../rollouts/staged-status.ts';

/**
 * Follows a rollout as Server-Sent Events: each deployment's `state` and `log` lines, and for a
 * staged rollout its `rollout` status as it changes; ends with `end` once every deployment the
 * principal may read is final, or a staged rollout is over. States are protocol events,
 * never parsed from log lines.
 */
export function rolloutEvents(
  c: Context,
  deps: {
    bus: EventBus;
    deployments: DeploymentRepository;
    flushLogs: () => Promise<void>;
    store: RolloutStore;
  },
  target: { workspaceId: number; id: number; principal: Principal },
): Response {
  return streamSSE(c, async (stream) => {
    const stop = new AbortController();
    stream.onAbort(() => stop.abort());
    // The token revoked, the stream ends without `end` (the rollout is not over); reconnecting is refused.
    let revoked = false;
    const unsubscribe = onRevocation(deps.bus, target.principal.tokenId, () => {
      revoked = true;
      stop.abort();
    });
    const items = followDeployments(deps, {
      concerns: (e) => e.rolloutId === target.id,
      load: async () =>
        (await deps.deployments.byRollout(target.workspaceId, target.id)).filter((d) =>
          canReadDeployment(target.principal, d.agent_name),
        ),
      signal: stop.signal,
      staged: {
        rolloutId: target.id,
        load: async () => {
          const status = await stagedStatus(deps.store, target.id);
          return status && { final: isFinalRolloutState(status.state), status };
        },
      },
    });
    try {
      for await (const item of items) {
        if (item.kind === 'idle') {
          await stream.write(': keep-alive\n\n');
        } else if (item.kind === 'rollout') {
          await stream.writeSSE({ event: 'rollout', data: JSON.stringify(item.status) });
        } else if (item.kind === 'state') {
          await stream.writeSSE({ event: 'state', data: JSON.stringify(item.state) });
        } else {
          const { deploymentId, agent, lines } = item;
          await stream.writeSSE({ event: 'log', data: JSON.stringify({ deploymentId, agent, lines }) });
        }
      }
    } finally {
      unsubscribe();
    }
    if (!stream.aborted && !revoked)
      await stream.writeSSE({ event: 'end', data: JSON.stringify({ rolloutId: target.id }) });
  });
}
