import { type AgentMessage, CLOSE_CODES } from '../../protocol/agent-protocol.ts';
import type { AgentConnection } from './agent-connection.ts';
import type { AgentMessageContext } from './agent-message-context.ts';
import { handleClosure } from './handle-closure.ts';
import { handleConfirm } from './handle-confirm.ts';
import { handleHello } from './handle-hello.ts';
import { handleLog } from './handle-log.ts';
import { handleObserved } from './handle-observed.ts';
import { handleProgress } from './handle-progress.ts';
import { handleResult } from './handle-result.ts';

/**
 * Hands an agent's message to the handler of its type; anything before `hello` closes the
 * connection. Not async itself: the handler's promise is returned as is (one per message).
 */
export function handleAgentMessage(
  conn: AgentConnection,
  msg: AgentMessage,
  ctx: AgentMessageContext,
): Promise<void> {
  if (!conn.helloDone && msg.type !== 'hello') {
    conn.closeWithError(
      { code: 'BAD_REQUEST', message: 'Cannot handle agent message: the first message must be hello' },
      { code: CLOSE_CODES.invalidMessage, reason: 'hello expected' },
    );
    return Promise.resolve();
  }
  switch (msg.type) {
    case 'hello':
      return handleHello(conn, msg, ctx);
    case 'progress':
      return handleProgress(conn, msg, ctx);
    case 'log':
      return handleLog(conn, msg, ctx);
    case 'result':
      return handleResult(conn, msg, ctx);
    case 'observed':
      return handleObserved(conn, msg, ctx);
    case 'closure':
      return handleClosure(conn, msg, ctx);
    case 'confirm':
      return handleConfirm(conn, msg, ctx);
    case 'plan-result': {
      // An answer nobody waits for any more (it came after the timeout) is dropped.
      const answer = conn.plans.get(msg.requestId);
      conn.plans.delete(msg.requestId);
      answer?.({ plan: msg.plan, error: msg.error });
      return Promise.resolve();
    }
  }
}
