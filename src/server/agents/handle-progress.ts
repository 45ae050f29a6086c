import type { AgentMessage } from '../../protocol/agent-protocol.ts';
import { isOpenState } from '../../protocol/deployment-state.ts';
import { STEP_WRITES } from '../db/deployment-repository.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/**
 * Handles `progress`: marks an open deployment running at the reported step and announces it;
 * a deployment cancelled meanwhile stays cancelled.
 */
export async function handleProgress(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'progress' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  const d = await conn.known.find(msg.deploymentId);
  if (!d || !isOpenState(d.state)) return;
  const agentId = conn.agent.id;
  const step = msg.step;
  const at = ctx.now();
  // Not awaited: the write is committed with others within milliseconds, in order, and the
  // step is announced once it is.
  void ctx.writes
    .writeGrouped(STEP_WRITES, { id: d.id, agentId, step, at })
    .then((started) => {
      if (!started) {
        d.state = 'cancelled';
        return;
      }
      d.state = 'running';
      d.startedAt ??= at;
      ctx.bus.publish('deployment', {
        workspaceId: d.workspaceId,
        rolloutId: d.rolloutId,
        deploymentId: d.id,
        agent: conn.agent.name,
        state: 'running',
        step,
        reason: null,
      });
    })
    .catch((err) => ctx.log.error({ err, agent: conn.agent.name }, 'cannot record a step'));
}
