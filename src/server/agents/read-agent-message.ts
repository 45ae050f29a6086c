import { type AgentMessage, agentMessageSchema } from '../../protocol/agent-protocol.ts';

/**
 * Reads one WebSocket frame from an agent as a protocol message.
 * @throws Error saying what is wrong (a binary frame, bad JSON, or the first schema problem).
 */
export function readAgentMessage(data: Buffer, isBinary: boolean): AgentMessage {
  if (isBinary) throw new Error('binary frames are not part of the protocol');
  const parsed = agentMessageSchema.safeParse(JSON.parse(data.toString('utf8')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${issue?.path.join('.') || 'message'}: ${issue?.message}`);
  }
  return parsed.data;
}
