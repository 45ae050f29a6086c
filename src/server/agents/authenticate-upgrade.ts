import type { IncomingMessage } from 'node:http';
import { CairnError } from '../../lib/cairn-error.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import type { Principal } from '../auth/principal.ts';
import type { AgentRepository, AgentRow } from '../db/agent-repository.ts';
import { requestClientAddress } from '../http/client-address.ts';

/** An agent whose upgrade request was authenticated, and the token it used. */
export interface AuthenticatedAgent {
  readonly agent: AgentRow;
  readonly principal: Principal;
}

/**
 * Authenticates an agent's upgrade request before the WebSocket handshake: the token must be an
 * agent token, of the agent named in `?agent=` if the agent names itself, and that agent must exist.
 * @throws CairnError UNAUTHENTICATED without a token or for an agent that no longer exists,
 *   FORBIDDEN for a token that is not this agent's; TOO_MANY_REQUESTS from the authenticator.
 */
export async function authenticateUpgrade(
  req: IncomingMessage,
  deps: { readonly auth: Authenticator; readonly agents: Pick<AgentRepository, 'byName'> },
): Promise<AuthenticatedAgent> {
  const principal = await deps.auth.authenticate(req.headers.authorization, requestClientAddress(req));
  if (!principal)
    throw new CairnError('UNAUTHENTICATED', 'Cannot connect the agent: no token (set CAIRN_AGENT_TOKEN)');
  const scope = principal.scopes.find((s) => s.kind === 'agent');
  if (scope?.kind !== 'agent') {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot connect the agent: token '${principal.tokenName}' is not an agent token`,
    );
  }
  const wanted = new URL(req.url ?? '/', 'http://x').searchParams.get('agent');
  if (wanted !== null && wanted !== scope.agent) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot connect the agent: this token belongs to agent '${scope.agent}', not '${wanted}'`,
    );
  }
  const agent = await deps.agents.byName(principal.workspaceId, scope.agent);
  if (!agent)
    throw new CairnError(
      'UNAUTHENTICATED',
      `Cannot connect the agent: agent '${scope.agent}' no longer exists`,
    );
  return { agent, principal };
}
