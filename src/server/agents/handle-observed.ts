import type { AgentMessage } from '../../protocol/agent-protocol.ts';
import { OBSERVED_WRITES } from '../db/agent-repository.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/** Handles `observed`: records what the agent sees on its machine now. */
export async function handleObserved(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'observed' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  const agentId = conn.agent.id;
  const observed = msg.observed;
  const at = ctx.now();
  await ctx.writes.writeGrouped(OBSERVED_WRITES, { id: agentId, observed, at });
}
