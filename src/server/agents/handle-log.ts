import type { AgentMessage } from '../../protocol/agent-protocol.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/**
 * Handles `log`: queues the lines of one of the agent's deployments for the log writer. Past the
 * writer's high-water mark the agent waits (and its socket pauses) until the writer drains.
 */
export async function handleLog(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'log' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  const d = await conn.known.find(msg.deploymentId);
  if (!d) return;
  const target = { deploymentId: d.id, rolloutId: d.rolloutId, agent: conn.agent.name };
  if (!ctx.logs.append(target, msg.lines)) await ctx.logs.flush();
}
