import type { AgentMessage, ClosurePath } from '../../protocol/agent-protocol.ts';
import { isOpenState } from '../../protocol/deployment-state.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';

/** Where the hub records the closures agents report (see `src/server/closures/`). */
export interface ClosureSink {
  recordPart(input: {
    workspaceId: number;
    deploymentId: number;
    root: string;
    paths: readonly ClosurePath[];
    final: boolean;
    now: number;
  }): Promise<unknown>;
}

/**
 * Handles `closure`: records one part of the closure of the agent's deployment in flight (its
 * own, still open: the closure is reported right after realising); a report for a finished or
 * another agent's deployment is ignored. It is recorded as that deployment's report: it never
 * changes what other agents' diffs and plans show.
 */
export async function handleClosure(
  conn: AgentConnection,
  msg: Extract<AgentMessage, { type: 'closure' }>,
  ctx: AgentMessageContext,
): Promise<void> {
  const d = await conn.known.find(msg.deploymentId);
  if (!d || !isOpenState(d.state) || !ctx.closures) return;
  await ctx.closures.recordPart({
    workspaceId: d.workspaceId,
    deploymentId: d.id,
    root: d.storePath,
    paths: msg.paths,
    final: msg.final,
    now: ctx.now(),
  });
}
