import type { AgentMessage } from '../../protocol/agent-protocol.ts';
import { OBSERVED_WRITES } from '../db/agent-repository.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';
import { finishDeployment } from './finish-deployment.ts';

/**
 * Handles `result`: records what the agent observed and how its deployment ended, then tells it
 * what to run next.
 */
export async function handleResult(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'result' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  const agentId = conn.agent.id;
  const observed = msg.observed;
  const at = ctx.now();
  void ctx.writes
    .writeGrouped(OBSERVED_WRITES, { id: agentId, observed, at })
    .catch((err) => ctx.log.error({ err, agent: conn.agent.name }, 'cannot record observed state'));
  await finishDeployment(conn, msg.result, ctx);
  await ctx.sendDesired(agentId);
}
