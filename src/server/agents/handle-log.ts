import type { AgentMessage } from '../../protocol/agent-protocol.ts';
import { isOpenState } from '../../protocol/deployment-state.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/**
 * Handles `log`: queues the lines of one of the agent's open deployments for the log writer
 * (which caps each deployment's log, see log-writer.ts). Past the
 * writer's high-water mark the agent waits (and its socket pauses) until the writer drains.
 */
export async function handleLog(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'log' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  const d = await conn.known.find(msg.deploymentId);
  // Only the agent's own deployments, and only while they run: lines for a finished one would
  // outlive its log's retention, and an agent could write them without end.
  if (!d || !isOpenState(d.state)) return;
  const target = { deploymentId: d.id, rolloutId: d.rolloutId, agent: conn.agent.name };
  if (!ctx.logs.append(target, msg.lines)) await ctx.logs.flush();
}
