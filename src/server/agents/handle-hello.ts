import {
  AGENT_PROTOCOL_VERSION,
  type AgentMessage,
  CLOSE_CODES,
  MIN_AGENT_PROTOCOL_VERSION,
} from '../../protocol/agent-protocol.ts';
import { HELLO_WRITES } from '../db/agent-repository.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';
import { finishDeployment } from './finish-deployment.ts';
import { toDesired } from './to-desired.ts';

/**
 * Handles `hello`: refuses a protocol older than the server accepts; records what the agent
 * observed and the results it could not deliver before; then welcomes it with its caches and
 * what it should run, which gives its connect turn back.
 */
export async function handleHello(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'hello' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  if (msg.protocol < MIN_AGENT_PROTOCOL_VERSION) {
    conn.closeWithError(
      {
        code: 'BAD_REQUEST',
        message: `Cannot accept agent: protocol ${msg.protocol} is older than ${MIN_AGENT_PROTOCOL_VERSION}; upgrade the agent`,
      },
      { code: CLOSE_CODES.invalidMessage, reason: 'protocol too old' },
    );
    return;
  }
  conn.helloDone = true;
  conn.protocol = msg.protocol;
  conn.system = msg.observed.system;
  const agentId = conn.agent.id;
  const observed = msg.observed;
  const at = ctx.now();
  const recorded = ctx.writes.writeGrouped(HELLO_WRITES, {
    id: agentId,
    observed,
    at,
    replicaId: ctx.replicaId,
  });
  const finished = msg.unreported.map((r) => finishDeployment(conn, r, ctx));
  const [epoch] = await Promise.all([recorded, ...finished]);
  conn.epoch = epoch;
  // Committed: a replica still holding an older connection of this agent closes it.
  ctx.bus.publish('agent-connected', { agentId, epoch });
  const [desired, caches, serverId, workspace] = await Promise.all([
    ctx.desired.of(agentId),
    ctx.caches.of(conn.agent.workspace_id),
    ctx.identity.serverId(),
    ctx.identity.workspaceName(conn.agent.workspace_id),
  ]);
  const base = ctx.baseUrl(conn.requestBase);
  if (desired) conn.known.remember(desired);
  conn.toldDesired = desired?.id ?? null;
  conn.send({
    type: 'welcome',
    protocol: AGENT_PROTOCOL_VERSION,
    agent: conn.agent.name,
    // Deployment ids are per server: the agent's journal records whose they are.
    serverId,
    workspace,
    caches: caches.map((c) => ({
      url: `${base}/cache/${c.name}`,
      publicKey: c.public_key,
      private: c.public !== 1,
    })),
    desired: desired ? toDesired(desired, conn.system) : null,
  });
  conn.welcomed();
  // After the online flag is written: the rollout engine dispatches what it deferred.
  ctx.bus.publish('agent-online', { agentId });
}
