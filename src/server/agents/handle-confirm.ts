import type { AgentMessage } from '../../protocol/agent-protocol.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/**
 * Handles `confirm`: the agent reached us over a new connection after switching, so its network
 * works; it is answered `confirmed` if its deployment still runs. The database, not this
 * connection's memory, says whether it does.
 */
export async function handleConfirm(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'confirm' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  // The agent says where its deployment is (`progress`) before it asks: that write, queued
  // ahead of this message, must be committed first, or a deployment whose earlier progress was
  // lost (a server killed before committing it) reads as not running and is never confirmed.
  await ctx.writes.committed();
  const d = await ctx.deployments.byId(conn.agent.workspace_id, Number(msg.deploymentId));
  if (d && d.agent_id === conn.agent.id && d.state === 'running') {
    conn.known.remember(d);
    conn.send({ type: 'confirmed', deploymentId: msg.deploymentId });
  }
}
