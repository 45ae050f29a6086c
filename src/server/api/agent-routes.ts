import type { Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import { MAX_AGENT_TAGS } from '../../protocol/agent-tags.ts';
import {
  type AgentInfo,
  changeAgentTagsBodySchema,
  createAgentBodySchema,
} from '../../protocol/api-schemas.ts';
import { assertAdmin, assertFleetViewer, canViewAgent } from '../auth/permissions.ts';
import { generateTokenSecret, hashTokenSecret } from '../auth/token-secret.ts';
import type { AgentRepository, AgentRow } from '../db/agent-repository.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { TokenRepository } from '../db/token-repository.ts';
import type { EventBus } from '../events/event-bus.ts';
import type { ApiEnv } from './api-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** An agent row and its tags as the API shows them. */
export function toAgentInfo(row: AgentRow, tags: readonly string[]): AgentInfo {
  return {
    name: row.name,
    online: row.online === 1,
    lastSeenAt: iso(row.last_seen_at),
    storePath: row.store_path,
    generation: row.generation,
    kind: row.kind,
    system: row.system,
    hostname: row.hostname,
    agentVersion: row.agent_version,
    nixVersion: row.nix_version,
    profile: row.profile,
    createdAt: new Date(row.created_at).toISOString(),
    // Sorted here, not by the database, whose collation may order "a-b" and "ab" either way.
    tags: [...tags].sort(),
    pendingApproval: row.pending_since !== null,
  };
}

/** Makes a new token for agent `name` (scope `agent:NAME`, named `agent NAME`); its secret and id. */
export async function issueAgentToken(
  tokens: Pick<TokenRepository, 'create'>,
  agent: { workspaceId: number; name: string; now: number },
): Promise<{ secret: string; tokenId: string }> {
  const secret = generateTokenSecret();
  const tokenId = await tokens.create({
    workspaceId: agent.workspaceId,
    name: `agent ${agent.name}`,
    hash: hashTokenSecret(secret),
    scopes: [`agent:${agent.name}`],
    createdAt: agent.now,
    expiresAt: null,
  });
  return { secret, tokenId };
}

/** `agents` routes: create (with its token and tags), list, show, tag, revoke its token. */
export function registerAgentRoutes(
  api: Hono<ApiEnv>,
  deps: {
    agents: AgentRepository;
    tokens: TokenRepository;
    bus: EventBus;
    audit: AuditRepository;
    now: () => number;
  },
): void {
  api.post('/workspaces/:ws/agents', async (c) => {
    assertAdmin(c.var.principal, 'create an agent');
    const body = await parseJsonBody(c, createAgentBodySchema, 'create an agent');
    const now = deps.now();
    const existing = await deps.agents.byName(c.var.workspaceId, body.name);
    if (existing) {
      throw new CairnError(
        'ALREADY_EXISTS',
        `Cannot create agent: '${body.name}' exists; to give it a new token, run cairn agent revoke ${body.name} and then cairn agent token ${body.name}`,
      );
    }
    const { secret, tokenId } = await issueAgentToken(deps.tokens, {
      workspaceId: c.var.workspaceId,
      name: body.name,
      now,
    });
    const row = await deps.agents.create({
      workspaceId: c.var.workspaceId,
      name: body.name,
      tokenId,
      createdAt: now,
    });
    if (!row) throw new CairnError('ALREADY_EXISTS', `Cannot create agent: '${body.name}' exists`);
    // The schema allows at most MAX_AGENT_TAGS, so the new agent cannot end with too many.
    const tags = await deps.agents.changeTags(row.id, {
      add: body.tags ?? [],
      remove: [],
      max: MAX_AGENT_TAGS,
    });
    await recordAudit(deps, c, {
      action: 'agent.create',
      target: body.name,
      ...(body.tags?.length ? { detail: { tags: body.tags } } : {}),
    });
    return c.json({ agent: toAgentInfo(row, Array.isArray(tags) ? tags : []), token: secret }, 201);
  });

  // One query for the agents and one for all their tags, whatever the fleet's size.
  api.get('/workspaces/:ws/agents', async (c) => {
    assertFleetViewer(c.var.principal, 'list agents');
    const rows = await deps.agents.list(c.var.workspaceId);
    const tags = await deps.agents.tagsOf(rows.map((r) => r.id));
    return c.json({ agents: rows.map((r) => toAgentInfo(r, tags.get(r.id) ?? [])) });
  });

  const agentOr404 = async (workspaceId: number, name: string) => {
    const row = await deps.agents.byName(workspaceId, name);
    if (!row) throw new CairnError('NOT_FOUND', `Cannot find agent '${name}' in this workspace`);
    return row;
  };
  const agentInfoOf = async (row: AgentRow) =>
    toAgentInfo(row, (await deps.agents.tagsOf([row.id])).get(row.id) ?? []);

  api.get('/workspaces/:ws/agents/:name', async (c) => {
    const p = c.var.principal;
    const name = c.req.param('name');
    if (!canViewAgent(p, name))
      throw new CairnError('FORBIDDEN', `Cannot show agent '${name}': token '${p.tokenName}' may not`);
    return c.json(await agentInfoOf(await agentOr404(c.var.workspaceId, name)));
  });

  // Adds and removes tags together (a PATCH: tags not named are kept), so two admins tagging
  // the same agent at once cannot undo each other's change.
  api.patch('/workspaces/:ws/agents/:name/tags', async (c) => {
    const name = c.req.param('name');
    assertAdmin(c.var.principal, `tag agent '${name}'`);
    const body = await parseJsonBody(c, changeAgentTagsBodySchema, `tag agent '${name}'`);
    const row = await agentOr404(c.var.workspaceId, name);
    const tags = await deps.agents.changeTags(row.id, { ...body, max: MAX_AGENT_TAGS });
    if (!Array.isArray(tags)) {
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot tag agent '${name}': it would have ${tags.tooMany} tags, more than the ${MAX_AGENT_TAGS} allowed`,
      );
    }
    await recordAudit(deps, c, { action: 'agent.tag', target: row.name, detail: { ...body, tags } });
    return c.json(toAgentInfo(row, tags));
  });

  // An enrolled agent that waits for approval is told nothing to run until this.
  api.post('/workspaces/:ws/agents/:name/approve', async (c) => {
    const name = c.req.param('name');
    assertAdmin(c.var.principal, `approve agent '${name}'`);
    const row = await agentOr404(c.var.workspaceId, name);
    if (!(await deps.agents.approve(row.id))) {
      throw new CairnError('CONFLICT', `Cannot approve agent '${name}': it is not waiting for approval`);
    }
    await recordAudit(deps, c, { action: 'agent.approve', target: row.name });
    // Its desired state, withheld until now, is looked up again and told.
    deps.bus.publish('desired', { agentId: row.id });
    return c.json(await agentInfoOf({ ...row, pending_since: null }));
  });

  // Revoking an agent revokes its token: its connection closes at once and reconnects are refused.
  api.delete('/workspaces/:ws/agents/:name/token', async (c) => {
    assertAdmin(c.var.principal, 'revoke an agent');
    const row = await agentOr404(c.var.workspaceId, c.req.param('name'));
    const revoked = await deps.tokens.revoke(c.var.workspaceId, row.token_id, deps.now());
    for (const tokenId of revoked) deps.bus.publish('token-revoked', { tokenId });
    await recordAudit(deps, c, { action: 'agent.revoke', target: row.name });
    return c.body(null, 204);
  });

  // A new token for an existing agent, after a revoke (or to rotate): the old one stops working.
  api.post('/workspaces/:ws/agents/:name/token', async (c) => {
    assertAdmin(c.var.principal, 'issue an agent token');
    const row = await agentOr404(c.var.workspaceId, c.req.param('name'));
    for (const tokenId of await deps.tokens.revoke(c.var.workspaceId, row.token_id, deps.now())) {
      deps.bus.publish('token-revoked', { tokenId });
    }
    const { secret, tokenId } = await issueAgentToken(deps.tokens, {
      workspaceId: c.var.workspaceId,
      name: row.name,
      now: deps.now(),
    });
    await deps.agents.setToken(row.id, tokenId);
    await recordAudit(deps, c, { action: 'agent.token', target: row.name });
    return c.json({ agent: await agentInfoOf({ ...row, token_id: tokenId }), token: secret }, 201);
  });
}
