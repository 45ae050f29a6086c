import { Hono } from 'hono';
import { z } from 'zod';
import { CairnError } from '../../lib/cairn-error.ts';
import { formatPublicKey, formatSecretKey, generateSecretKey } from '../../nix/signing-key.ts';
import { parseStorePath } from '../../nix/store-path.ts';
import {
  type CacheInfo,
  type CacheKeyInfo,
  createCacheBodySchema,
  createTokenBodySchema,
  missingPathsBodySchema,
  type TokenInfo,
} from '../../protocol/api-schemas.ts';
import { parseOrThrow, validationError } from '../../protocol/parse-or-throw.ts';
import { idParamSchema, limitParamSchema } from '../../protocol/request-params.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import { assertAdmin, canPull } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import { generateTokenSecret, hashTokenSecret } from '../auth/token-secret.ts';
import type { BinaryCache } from '../cache/binary-cache.ts';
import { CacheCollector } from '../cache/cache-collector.ts';
import type { ClosureRepository } from '../closures/closure-repository.ts';
import type { PlanAsker } from '../closures/plan-rollout.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { CacheKeyRow, CacheRepository, CacheRow } from '../db/cache-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { EnrolTokenRepository } from '../db/enrol-token-repository.ts';
import type { PathIndex } from '../db/path-index.ts';
import type { TokenRepository, TokenRow } from '../db/token-repository.ts';
import type { WorkspaceRepository } from '../db/workspace-repository.ts';
import type { RollbackDeps } from '../deployments/rollback-agent.ts';
import type { EventBus } from '../events/event-bus.ts';
import { clientAddress } from '../http/client-address.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import { registerAgentRoutes } from './agent-routes.ts';
import { type CacheGcRouteDeps, registerCacheGcRoutes, toGcRunInfo } from './cache-gc-routes.ts';
import { registerClosureRoutes } from './closure-routes.ts';
import { registerDeploymentRoutes } from './deployment-routes.ts';
import { registerEnrolAgentRoute } from './enrol-agent-route.ts';
import { registerEnrolTokenRoutes } from './enrol-token-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';
import { registerRolloutRoutes } from './rollout-routes.ts';
import { registerWebhookRoutes, type WebhookRouteDeps } from './webhook-routes.ts';

/** What the API routes need. */
export interface ApiDeps extends WebhookRouteDeps, CacheGcRouteDeps {
  readonly auth: Authenticator;
  readonly workspaces: WorkspaceRepository;
  readonly tokens: TokenRepository;
  readonly caches: CacheRepository;
  readonly index: PathIndex;
  readonly binaryCache: BinaryCache;
  readonly bus: EventBus;
  readonly audit: AuditRepository;
  readonly closures: ClosureRepository;
  /** Writes buffered deployment log lines, so a reader of the database sees all sent so far. */
  readonly flushLogs: () => Promise<void>;
  readonly agents: AgentRepository;
  readonly enrolTokens: EnrolTokenRepository;
  readonly deployments: DeploymentRepository;
  /** Runs staged rollouts. */
  readonly rollouts: RolloutEngine;
  readonly now: () => number;
  /** The server's URL as clients reach it, for cache URLs in answers. */
  readonly baseUrl: (requestUrl: string) => string;
  /** Counts the rollbacks asked for through the API. */
  readonly metrics?: RollbackDeps['metrics'];
  /** Asks connected agents' machines for their part of a plan (the agent hub). */
  readonly planAsker?: PlanAsker;
}

/** Hono environment of workspace-scoped routes. */
export type ApiEnv = { Variables: { principal: Principal; workspaceId: number } };
type Env = ApiEnv;

const auditQuerySchema = z.object({ limit: limitParamSchema(100, 1000), before: idParamSchema.optional() });

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The JSON API under `/api/v1`. Every route needs a token; workspaces scope every path. */
export function apiRoutes(deps: ApiDeps): Hono<Env> {
  const api = new Hono<Env>();

  // Before the authentication below, which refuses enrolment tokens: this route answers alone.
  registerEnrolAgentRoute(api, deps);

  api.use('/workspaces/:ws/*', async (c, next) => {
    const principal = await deps.auth.authenticate(c.req.header('authorization'), clientAddress(c));
    if (!principal)
      throw new CairnError(
        'UNAUTHENTICATED',
        'Cannot use the API: a token is required (Authorization: Bearer <token>)',
      );
    // A token made for Prometheus reads /metrics and nothing of the API, not even lists that
    // any other token may read (filtered to what it may see).
    if (principal.scopes.every((s) => s.kind === 'metrics')) {
      throw new CairnError(
        'FORBIDDEN',
        `Cannot use the API: token '${principal.tokenName}' has only the metrics scope, which reads GET /metrics`,
      );
    }
    const workspaceId = await deps.workspaces.idOf(c.req.param('ws') ?? '');
    if (workspaceId === undefined || workspaceId !== principal.workspaceId) {
      throw new CairnError('NOT_FOUND', `Cannot find workspace '${c.req.param('ws')}' for this token`);
    }
    c.set('principal', principal);
    c.set('workspaceId', workspaceId);
    await next();
  });

  const cacheInfo = async (row: CacheRow, requestUrl: string): Promise<CacheInfo> => {
    const stats = (await deps.caches.stats([row.id])).get(row.id);
    return toCacheInfo(row, stats, deps.baseUrl(requestUrl));
  };

  api.post('/workspaces/:ws/caches', async (c) => {
    assertAdmin(c.var.principal, 'create a cache');
    const body = await parseJsonBody(c, createCacheBodySchema, 'create a cache');
    const key = generateSecretKey(`${body.name}-1`);
    const row = await deps.caches.create({
      workspace_id: c.var.workspaceId,
      name: body.name,
      public: body.public ? 1 : 0,
      secret_key: formatSecretKey(key),
      public_key: formatPublicKey(key.publicKey),
      created_at: deps.now(),
    });
    if (!row) throw new CairnError('ALREADY_EXISTS', `Cannot create cache: the name '${body.name}' is taken`);
    await recordAudit(deps, c, {
      action: 'cache.create',
      target: body.name,
      detail: { public: body.public },
    });
    return c.json(await cacheInfo(row, c.req.url), 201);
  });

  api.get('/workspaces/:ws/caches', async (c) => {
    const rows = (await deps.caches.list(c.var.workspaceId)).filter((r) => canPull(c.var.principal, r.name));
    const stats = await deps.caches.stats(rows.map((r) => r.id));
    const base = deps.baseUrl(c.req.url);
    return c.json({ caches: rows.map((r) => toCacheInfo(r, stats.get(r.id), base)) });
  });

  const visibleCache = async (c: { var: Env['Variables'] }, name: string): Promise<CacheRow> => {
    const row = await deps.caches.byName(name);
    if (!row || row.workspace_id !== c.var.workspaceId || (!row.public && !canPull(c.var.principal, name))) {
      throw new CairnError('NOT_FOUND', `Cannot find cache: no cache named '${name}' in this workspace`);
    }
    return row;
  };

  api.get('/workspaces/:ws/caches/:name', async (c) => {
    const row = await visibleCache(c, c.req.param('name'));
    const info = await cacheInfo(row, c.req.url);
    // What a collection would free: computed from the whole path index, so only here.
    const plan = await deps.collector.collect(row, { dryRun: true, trigger: 'manual' });
    const [last] = await deps.gc.runs(row.id, 1);
    info.signingKeys = (await deps.caches.keys(row.id))
      .filter((k) => k.retired_at === null)
      .map((k) => k.public_key);
    info.usage = {
      reclaimablePaths: plan.paths.length,
      reclaimableNarFiles: plan.narFiles.length,
      reclaimableBytes: plan.bytesFreed,
      rootPaths: plan.rootPaths,
      pins: (await deps.gc.pins(row.id)).length,
      lastGc: last ? toGcRunInfo(last) : null,
    };
    return c.json(info);
  });

  api.get('/workspaces/:ws/caches/:name/keys', async (c) => {
    assertAdmin(c.var.principal, 'list signing keys');
    const row = await visibleCache(c, c.req.param('name'));
    return c.json({ keys: (await deps.caches.keys(row.id)).map(toCacheKeyInfo) });
  });

  // Rotation: a new key signs alongside the old ones until they are retired.
  api.post('/workspaces/:ws/caches/:name/keys', async (c) => {
    assertAdmin(c.var.principal, 'rotate a signing key');
    const row = await visibleCache(c, c.req.param('name'));
    const taken = new Set((await deps.caches.keys(row.id)).map((k) => k.name));
    let n = taken.size + 1;
    while (taken.has(`${row.name}-${n}`)) n++;
    const key = generateSecretKey(`${row.name}-${n}`);
    await deps.caches.addKey(
      row.id,
      { name: key.name, secretKey: formatSecretKey(key), publicKey: formatPublicKey(key.publicKey) },
      deps.now(),
    );
    deps.bus.publish('cache-keys', { workspaceId: row.workspace_id, cache: row.name });
    await recordAudit(deps, c, { action: 'cache.rotate-key', target: row.name, detail: { key: key.name } });
    return c.json({ keys: (await deps.caches.keys(row.id)).map(toCacheKeyInfo) }, 201);
  });

  api.delete('/workspaces/:ws/caches/:name/keys/:key', async (c) => {
    assertAdmin(c.var.principal, 'retire a signing key');
    const row = await visibleCache(c, c.req.param('name'));
    const keyName = c.req.param('key');
    await deps.caches.retireKey(row.id, keyName, deps.now());
    deps.bus.publish('cache-keys', { workspaceId: row.workspace_id, cache: row.name });
    await recordAudit(deps, c, { action: 'cache.retire-key', target: row.name, detail: { key: keyName } });
    return c.json({ keys: (await deps.caches.keys(row.id)).map(toCacheKeyInfo) });
  });

  api.post('/workspaces/:ws/caches/:name/missing', async (c) => {
    const row = await visibleCache(c, c.req.param('name'));
    const body = await parseJsonBody(c, missingPathsBodySchema, 'check paths');
    const byHash = new Map(body.paths.map((p) => [parseStorePath(p).hashPart, p]));
    const present = await deps.index.existingHashParts(row.id, [...byHash.keys()]);
    return c.json({ missing: [...byHash].filter(([h]) => !present.has(h)).map(([, p]) => p) });
  });

  api.post('/workspaces/:ws/tokens', async (c) => {
    assertAdmin(c.var.principal, 'create a token');
    const body = await parseJsonBody(c, createTokenBodySchema, 'create a token');
    const secret = generateTokenSecret();
    const createdAt = deps.now();
    const expiresAt = body.expiresAt === undefined ? null : Date.parse(body.expiresAt);
    // A token born expired is a mistake (a typo in a date, a clock off), never what was meant.
    if (expiresAt !== null && expiresAt <= createdAt) {
      throw validationError('create a token', [
        { field: 'expiresAt', message: `must be in the future (${body.expiresAt} is not)` },
      ]);
    }
    const id = await deps.tokens.create({
      workspaceId: c.var.workspaceId,
      name: body.name,
      hash: hashTokenSecret(secret),
      scopes: body.scopes,
      createdAt,
      expiresAt,
    });
    const info: TokenInfo = {
      id,
      name: body.name,
      scopes: body.scopes,
      createdAt: new Date(createdAt).toISOString(),
      expiresAt: iso(expiresAt),
      revokedAt: null,
      lastUsedAt: null,
    };
    await recordAudit(deps, c, {
      action: 'token.create',
      target: id,
      detail: { name: body.name, scopes: body.scopes },
    });
    return c.json({ ...info, token: secret }, 201);
  });

  api.get('/workspaces/:ws/tokens', async (c) => {
    assertAdmin(c.var.principal, 'list tokens');
    return c.json({ tokens: (await deps.tokens.list(c.var.workspaceId)).map(toTokenInfo) });
  });

  api.delete('/workspaces/:ws/tokens/:id', async (c) => {
    assertAdmin(c.var.principal, 'revoke a token');
    const revoked = await deps.tokens.revoke(c.var.workspaceId, c.req.param('id'), deps.now());
    if (revoked.length === 0) {
      throw new CairnError(
        'NOT_FOUND',
        `Cannot revoke token: no live token with id or name '${c.req.param('id')}'`,
      );
    }
    for (const tokenId of revoked) {
      // Open agent connections with this token close at once.
      deps.bus.publish('token-revoked', { tokenId });
      await recordAudit(deps, c, { action: 'token.revoke', target: tokenId });
    }
    return c.body(null, 204);
  });

  api.get('/workspaces/:ws/audit', async (c) => {
    assertAdmin(c.var.principal, 'read the audit log');
    const { limit, before } = parseOrThrow(auditQuerySchema, c.req.query(), { action: 'read the audit log' });
    const rows = await deps.audit.list(c.var.workspaceId, {
      limit,
      ...(before === undefined ? {} : { beforeId: before }),
    });
    return c.json({
      entries: rows.map((r) => ({
        id: r.id,
        at: new Date(r.at).toISOString(),
        tokenId: r.token_id,
        tokenName: r.token_name,
        action: r.action,
        target: r.target,
        address: r.address,
        detail: r.detail === null ? null : (JSON.parse(r.detail) as Record<string, unknown>),
      })),
    });
  });

  registerAgentRoutes(api, deps);
  registerEnrolTokenRoutes(api, deps);
  registerClosureRoutes(api, deps);
  registerDeploymentRoutes(api, deps);
  registerRolloutRoutes(api, deps);
  registerWebhookRoutes(api, deps);
  registerCacheGcRoutes(api, deps);
  return api;
}

function toCacheInfo(
  row: CacheRow,
  stats: { paths: number; narBytes: number; fileBytes: number } | undefined,
  base: string,
): CacheInfo {
  return {
    name: row.name,
    public: row.public === 1,
    publicKey: row.public_key,
    url: `${base}/cache/${row.name}`,
    createdAt: new Date(row.created_at).toISOString(),
    paths: stats?.paths ?? 0,
    narBytes: stats?.narBytes ?? 0,
    fileBytes: stats?.fileBytes ?? 0,
    retentionSeconds: CacheCollector.retentionOf(row),
    retentionIsDefault: row.retention_seconds === null,
    quotaBytes: row.quota_bytes,
  };
}

function toCacheKeyInfo(row: CacheKeyRow): CacheKeyInfo {
  return {
    name: row.name,
    publicKey: row.public_key,
    createdAt: new Date(row.created_at).toISOString(),
    retiredAt: iso(row.retired_at),
  };
}

function toTokenInfo(row: TokenRow): TokenInfo {
  return {
    id: row.id,
    name: row.name,
    scopes: JSON.parse(row.scopes) as string[],
    createdAt: new Date(row.created_at).toISOString(),
    expiresAt: iso(row.expires_at),
    revokedAt: iso(row.revoked_at),
    lastUsedAt: iso(row.last_used_at),
  };
}
