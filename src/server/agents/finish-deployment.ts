import type { DeploymentResult } from '../../protocol/agent-protocol.ts';
import { FINISH_WRITES } from '../db/deployment-repository.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/**
 * Records an agent's result for one of its deployments (in `result`, or among `hello`'s
 * unreported ones) and announces the change; a result for a deployment that is not the agent's,
 * or already over, changes nothing.
 */
export async function finishDeployment(
  conn: AgentConnection,
  result: DeploymentResult,
  ctx: AgentMessageContext,
): Promise<void> {
  const d = await conn.known.find(result.deploymentId);
  if (!d) return;
  const agentId = conn.agent.id;
  const at = ctx.now();
  ctx.finishing(d.id);
  // The batch writes the log lines that came before the result first.
  const changed = await ctx.writes.writeGrouped(FINISH_WRITES, { id: d.id, agentId, result, at });
  ctx.logs.forget(d.id);
  conn.known.forget(d.id);
  d.state = result.state;
  if (!changed) return;
  if (d.startedAt !== null) ctx.metrics?.deploymentDuration(result.state, (at - d.startedAt) / 1000);
  ctx.bus.publish('deployment', {
    workspaceId: d.workspaceId,
    rolloutId: d.rolloutId,
    deploymentId: d.id,
    agent: conn.agent.name,
    state: result.state,
    step: result.step,
    reason: result.reason,
  });
}
