import type { Context, Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import { MAX_AGENT_TAGS } from '../../protocol/agent-tags.ts';
import { compileNamePattern, enrolBodySchema } from '../../protocol/enrol-schemas.ts';
import { hashTokenSecret, looksLikeEnrolToken } from '../auth/token-secret.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { EnrolTokenRepository, EnrolTokenRow } from '../db/enrol-token-repository.ts';
import type { TokenRepository } from '../db/token-repository.ts';
import type { WorkspaceRepository } from '../db/workspace-repository.ts';
import type { EventBus } from '../events/event-bus.ts';
import { clientAddress } from '../http/client-address.ts';
import { issueAgentToken, toAgentInfo } from './agent-routes.ts';
import type { ApiEnv } from './api-routes.ts';
import { enrolTokenState } from './enrol-token-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';

/** What enrolment needs. */
export interface EnrolDeps {
  readonly enrolTokens: EnrolTokenRepository;
  readonly workspaces: WorkspaceRepository;
  readonly tokens: TokenRepository;
  readonly agents: AgentRepository;
  readonly audit: AuditRepository;
  readonly bus: EventBus;
  readonly now: () => number;
}

/**
 * `POST /workspaces/:ws/enrol`: a machine holding an enrolment token registers itself as a new
 * agent and receives that agent's own token. Registered before the API's authentication, since
 * the enrolment token is accepted here and nowhere else (the authenticator refuses it).
 */
export function registerEnrolAgentRoute(api: Hono<ApiEnv>, deps: EnrolDeps): void {
  api.post('/workspaces/:ws/enrol', async (c) => {
    const secret = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
    if (secret === undefined || !looksLikeEnrolToken(secret)) {
      throw new CairnError(
        'UNAUTHENTICATED',
        'Cannot enrol: an enrolment token is required (Authorization: Bearer cairn_enrol_...; create one with cairn agent enrol-token create)',
      );
    }
    const workspaceId = await deps.workspaces.idOf(c.req.param('ws'));
    const token = await deps.enrolTokens.byHash(hashTokenSecret(secret));
    if (!token || token.workspace_id !== workspaceId) {
      throw new CairnError('UNAUTHENTICATED', 'Cannot enrol: unknown enrolment token');
    }
    const body = await parseJsonBody(c, enrolBodySchema, 'enrol');
    const refuse = async (
      code: 'UNAUTHENTICATED' | 'FORBIDDEN' | 'INVALID_ARGUMENT' | 'ALREADY_EXISTS',
      why: string,
    ) => {
      await audit(deps, c, token, {
        action: 'agent.enrol-refused',
        target: body.name,
        detail: { reason: why },
      });
      return new CairnError(code, `Cannot enrol agent '${body.name}': ${why}`);
    };
    const now = deps.now();
    const state = enrolTokenState(token, now);
    if (state === 'revoked') throw await refuse('UNAUTHENTICATED', `enrolment token ${token.id} was revoked`);
    if (state === 'expired') {
      throw await refuse(
        'UNAUTHENTICATED',
        `enrolment token ${token.id} expired at ${new Date(token.expires_at ?? 0).toISOString()}`,
      );
    }
    // The same machine again (its key matches): its first answer was lost, or it lost its token.
    const existing = await deps.agents.byName(token.workspace_id, body.name);
    if (
      existing !== undefined &&
      body.key !== undefined &&
      existing.enrolled_with === token.id &&
      existing.enrol_key_hash === hashTokenSecret(body.key)
    ) {
      for (const tokenId of await deps.tokens.revoke(token.workspace_id, existing.token_id, now)) {
        deps.bus.publish('token-revoked', { tokenId });
      }
      const { secret: agentSecret, tokenId } = await issueAgentToken(deps.tokens, {
        workspaceId: token.workspace_id,
        name: body.name,
        now,
      });
      await deps.agents.setToken(existing.id, tokenId);
      await audit(deps, c, token, {
        action: 'agent.enrol-again',
        target: body.name,
        detail: { enrolToken: token.id, previousToken: existing.token_id },
      });
      const tags = (await deps.agents.tagsOf([existing.id])).get(existing.id) ?? [];
      return c.json({ agent: toAgentInfo(existing, tags), token: agentSecret });
    }
    if (state === 'used up') {
      throw await refuse(
        'FORBIDDEN',
        `enrolment token ${token.id} is used up (${token.uses} of ${token.max_uses} uses); create another with cairn agent enrol-token create`,
      );
    }
    if (token.name_pattern !== null) {
      const pattern = compileNamePattern(token.name_pattern);
      if ('error' in pattern || !pattern.test(body.name)) {
        throw await refuse(
          'INVALID_ARGUMENT',
          `the name does not match the enrolment token's pattern (${token.name_pattern}); start the agent with a name that does`,
        );
      }
    }
    const taken = `an agent of that name exists; start this machine under another name (cairn deploy agent NAME --enrol)`;
    if (existing) throw await refuse('ALREADY_EXISTS', taken);
    // One statement takes the use: of two machines racing for the last one, one is refused.
    if (!(await deps.enrolTokens.claimUse(token.id, now))) {
      throw await refuse('FORBIDDEN', `enrolment token ${token.id} is used up or no longer valid`);
    }
    const { secret: agentSecret, tokenId } = await issueAgentToken(deps.tokens, {
      workspaceId: token.workspace_id,
      name: body.name,
      now,
    });
    const row = await deps.agents.create({
      workspaceId: token.workspace_id,
      name: body.name,
      tokenId,
      createdAt: now,
      enrolledWith: token.id,
      ...(body.key === undefined ? {} : { enrolKeyHash: hashTokenSecret(body.key) }),
      ...(token.require_approval === 1 ? { pendingSince: now } : {}),
    });
    if (!row) {
      // Taken between the check and now: the use goes back, the unused agent token is revoked.
      await deps.enrolTokens.releaseUse(token.id);
      await deps.tokens.revoke(token.workspace_id, tokenId, now);
      throw await refuse('ALREADY_EXISTS', taken);
    }
    const tags = JSON.parse(token.tags) as string[];
    const given = await deps.agents.changeTags(row.id, { add: tags, remove: [], max: MAX_AGENT_TAGS });
    await audit(deps, c, token, {
      action: 'agent.enrol',
      target: body.name,
      detail: { enrolToken: token.id, tags, pendingApproval: token.require_approval === 1 },
    });
    return c.json({ agent: toAgentInfo(row, Array.isArray(given) ? given : []), token: agentSecret }, 201);
  });
}

/** Records an enrolment (or a refused one) in the audit log, as done by the enrolment token. */
async function audit(
  deps: Pick<EnrolDeps, 'audit' | 'now'>,
  c: Context<ApiEnv>,
  token: EnrolTokenRow,
  entry: { action: string; target: string; detail: Record<string, unknown> },
): Promise<void> {
  await deps.audit.record(
    {
      workspaceId: token.workspace_id,
      tokenId: null,
      tokenName: `enrolment token ${token.id}`,
      address: clientAddress(c),
      ...entry,
    },
    deps.now(),
  );
}
