import type { DeploymentResult } from '../../protocol/agent-protocol.ts';
import { DeploymentRepository, deploymentWebhookData } from '../db/deployment-repository.ts';
import { enqueueWebhooks, inTransaction, type WebhookMessage } from '../db/webhook-outbox.ts';
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
  // A verdict and the webhooks telling of it are written together (the outbox).
  const changed = await ctx.writes.write((db) =>
    inTransaction(db, async (trx) => {
      const done = await new DeploymentRepository(trx).finish(d.id, agentId, result, at);
      if (done) await enqueueWebhooks(trx, verdictWebhooks(d, conn.agent.name, result, at));
      return done;
    }),
  );
  ctx.logs.forget(d.id);
  conn.known.forget(d.id);
  d.state = result.state;
  if (!changed) return;
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

/** The webhooks of a deployment's verdict: its state (none for a cancellation), and a reboot needed. */
function verdictWebhooks(
  d: { id: number; workspaceId: number; rolloutId: number },
  agent: string,
  result: DeploymentResult,
  at: number,
): WebhookMessage[] {
  const data = deploymentWebhookData(
    { id: d.id, rolloutId: d.rolloutId, agent },
    result.state,
    result.reason,
  );
  const out: WebhookMessage[] = [];
  if (result.state !== 'cancelled')
    out.push({ workspaceId: d.workspaceId, event: `deployment.${result.state}`, at, data });
  if (result.rebootRequired)
    out.push({ workspaceId: d.workspaceId, event: 'agent.reboot-required', at, data });
  return out;
}
