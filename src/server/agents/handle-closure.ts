import type { AgentMessage, ClosurePath } from '../../protocol/agent-protocol.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/** Where the hub records the closures agents report (see `src/server/closures/`). */
export interface ClosureSink {
  recordPart(input: {
    workspaceId: number;
    root: string;
    paths: readonly ClosurePath[];
    final: boolean;
    now: number;
  }): Promise<unknown>;
}

/** Handles `closure`: records one part of the closure of one of the agent's deployments. */
export async function handleClosure(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'closure' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  const d = await conn.known.find(msg.deploymentId);
  if (!d || !ctx.closures) return;
  await ctx.closures.recordPart({
    workspaceId: d.workspaceId,
    root: d.storePath,
    paths: msg.paths,
    final: msg.final,
    now: ctx.now(),
  });
}
