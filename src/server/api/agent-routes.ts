import type { Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import { type AgentInfo, createAgentBodySchema } from '../../protocol/api-schemas.ts';
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

/** An agent row as the API shows it. */
export function toAgentInfo(row: AgentRow): AgentInfo {
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
  };
}

/** `agents` routes: create (with its token), list, show, revoke its token. */
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
    const secret = generateTokenSecret();
    const now = deps.now();
    const existing = await deps.agents.byName(c.var.workspaceId, body.name);
    if (existing) {
      throw new CairnError(
        'ALREADY_EXISTS',
        `Cannot create agent: '${body.name}' exists; to give it a new token, run cairn agent revoke ${body.name} and then cairn agent token ${body.name}`,
      );
    }
    const tokenId = await deps.tokens.create({
      workspaceId: c.var.workspaceId,
      name: `agent ${body.name}`,
      hash: hashTokenSecret(secret),
      scopes: [`agent:${body.name}`],
      createdAt: now,
      expiresAt: null,
    });
    const row = await deps.agents.create({
      workspaceId: c.var.workspaceId,
      name: body.name,
      tokenId,
      createdAt: now,
    });
    if (!row) throw new CairnError('ALREADY_EXISTS', `Cannot create agent: '${body.name}' exists`);
    await recordAudit(deps, c, { action: 'agent.create', target: body.name });
    return c.json({ agent: toAgentInfo(row), token: secret }, 201);
  });

  api.get('/workspaces/:ws/agents', async (c) => {
    assertFleetViewer(c.var.principal, 'list agents');
    return c.json({ agents: (await deps.agents.list(c.var.workspaceId)).map(toAgentInfo) });
  });

  const agentOr404 = async (workspaceId: number, name: string) => {
    const row = await deps.agents.byName(workspaceId, name);
    if (!row) throw new CairnError('NOT_FOUND', `Cannot find agent '${name}' in this workspace`);
    return row;
  };

  api.get('/workspaces/:ws/agents/:name', async (c) => {
    const p = c.var.principal;
    const name = c.req.param('name');
    if (!canViewAgent(p, name))
      throw new CairnError('FORBIDDEN', `Cannot show agent '${name}': token '${p.tokenName}' may not`);
    return c.json(toAgentInfo(await agentOr404(c.var.workspaceId, name)));
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
    const secret = generateTokenSecret();
    const tokenId = await deps.tokens.create({
      workspaceId: c.var.workspaceId,
      name: `agent ${row.name}`,
      hash: hashTokenSecret(secret),
      scopes: [`agent:${row.name}`],
      createdAt: deps.now(),
      expiresAt: null,
    });
    await deps.agents.setToken(row.id, tokenId);
    await recordAudit(deps, c, { action: 'agent.token', target: row.name });
    return c.json({ agent: toAgentInfo({ ...row, token_id: tokenId }), token: secret }, 201);
  });
}
