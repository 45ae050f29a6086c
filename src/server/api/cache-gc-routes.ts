import type { Context, Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import { parseStorePath, parseStorePathBaseName } from '../../nix/store-path.ts';
import {
  cachePolicyBodySchema,
  type GcResultInfo,
  type GcRunInfo,
  type PinInfo,
  pinBodySchema,
} from '../../protocol/cache-gc-schemas.ts';
import { assertAdmin } from '../auth/permissions.ts';
import type { CacheCollector, GcResult } from '../cache/cache-collector.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { CacheGcRepository, GcRun } from '../db/cache-gc-repository.ts';
import type { CacheRepository, CacheRow } from '../db/cache-repository.ts';
import type { PathIndex } from '../db/path-index.ts';
import type { ApiEnv } from './api-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';

/** What the collection routes need. */
export interface CacheGcRouteDeps {
  readonly caches: CacheRepository;
  readonly index: PathIndex;
  readonly collector: CacheCollector;
  readonly gc: CacheGcRepository;
  readonly audit: AuditRepository;
  readonly now: () => number;
}

const iso = (ms: number) => new Date(ms).toISOString();

export function toGcResultInfo(r: GcResult): GcResultInfo {
  return {
    ...r,
    paths: [...r.paths],
    narFiles: [...r.narFiles],
    startedAt: iso(r.startedAt),
    finishedAt: iso(r.finishedAt),
  };
}

export function toGcRunInfo(r: GcRun): GcRunInfo {
  return {
    trigger: r.trigger,
    startedAt: iso(r.started_at),
    finishedAt: r.finished_at === null ? null : iso(r.finished_at),
    pathsRemoved: r.paths_removed,
    narFilesRemoved: r.nar_files_removed,
    bytesFreed: r.bytes_freed,
    error: r.error,
  };
}

/**
 * A cache's retention and quota, its collection (dry or real) and its pins. Admin only: each
 * decides what the fleet can still substitute.
 */
export function registerCacheGcRoutes(api: Hono<ApiEnv>, deps: CacheGcRouteDeps): void {
  const adminCache = async (c: Context<ApiEnv>, action: string): Promise<CacheRow> => {
    assertAdmin(c.var.principal, action);
    const name = c.req.param('name') ?? '';
    const row = await deps.caches.byName(name);
    if (!row || row.workspace_id !== c.var.workspaceId) {
      throw new CairnError('NOT_FOUND', `Cannot ${action}: no cache named '${name}' in this workspace`);
    }
    return row;
  };

  api.patch('/workspaces/:ws/caches/:name', async (c) => {
    const row = await adminCache(c, 'change the cache');
    const body = await parseJsonBody(c, cachePolicyBodySchema, 'change the cache');
    const policy = {
      retentionSeconds: body.retentionSeconds === undefined ? row.retention_seconds : body.retentionSeconds,
      quotaBytes: body.quotaBytes === undefined ? row.quota_bytes : body.quotaBytes,
    };
    await deps.gc.setPolicy(row.id, policy);
    await recordAudit(deps, c, { action: 'cache.policy', target: row.name, detail: policy });
    return c.json({ name: row.name, ...policy });
  });

  api.get('/workspaces/:ws/caches/:name/gc', async (c) => {
    const row = await adminCache(c, 'plan a collection');
    return c.json(toGcResultInfo(await deps.collector.collect(row, { dryRun: true, trigger: 'manual' })));
  });

  api.post('/workspaces/:ws/caches/:name/gc', async (c) => {
    const row = await adminCache(c, 'collect the cache');
    const result = await deps.collector.collect(row, { dryRun: false, trigger: 'manual' });
    await recordAudit(deps, c, {
      action: 'cache.gc',
      target: row.name,
      detail: { paths: result.paths.length, narFiles: result.narFiles.length, bytesFreed: result.bytesFreed },
    });
    return c.json(toGcResultInfo(result));
  });

  api.get('/workspaces/:ws/caches/:name/pins', async (c) => {
    const row = await adminCache(c, 'list pins');
    const pins: PinInfo[] = (await deps.gc.pins(row.id)).map((p) => ({
      storePath: p.store_path,
      createdAt: iso(p.created_at),
      createdBy: p.created_by,
      expiresAt: p.expires_at === null ? null : iso(p.expires_at),
    }));
    return c.json({ pins });
  });

  api.post('/workspaces/:ws/caches/:name/pins', async (c) => {
    const row = await adminCache(c, 'pin a path');
    const body = await parseJsonBody(c, pinBodySchema, 'pin a path');
    const expiresAt = body.expiresAt === undefined ? null : Date.parse(body.expiresAt);
    if (expiresAt !== null && expiresAt <= deps.now()) {
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot pin a path: expiresAt lies in the past (${body.expiresAt})`,
      );
    }
    const { hashPart } = parseStorePath(body.storePath);
    const held = await deps.index.storePath(row.id, hashPart);
    if (!held || held.store_path !== body.storePath) {
      throw new CairnError(
        'NOT_FOUND',
        `Cannot pin a path: cache '${row.name}' does not hold it; push it first (${body.storePath})`,
      );
    }
    const pin = {
      cache_id: row.id,
      hash_part: hashPart,
      store_path: body.storePath,
      created_at: deps.now(),
      created_by: c.var.principal.tokenName,
      expires_at: expiresAt,
    };
    await deps.gc.pin(pin);
    await recordAudit(deps, c, {
      action: 'cache.pin',
      target: row.name,
      detail: { storePath: body.storePath, expiresAt: body.expiresAt ?? null },
    });
    const info: PinInfo = {
      storePath: pin.store_path,
      createdAt: iso(pin.created_at),
      createdBy: pin.created_by,
      expiresAt: expiresAt === null ? null : iso(expiresAt),
    };
    return c.json(info, 201);
  });

  api.delete('/workspaces/:ws/caches/:name/pins/:path', async (c) => {
    const row = await adminCache(c, 'unpin a path');
    const baseName = c.req.param('path');
    let hashPart: string;
    try {
      hashPart = parseStorePathBaseName(baseName).hashPart;
    } catch {
      throw new CairnError(
        'INVALID_ARGUMENT',
        `Cannot unpin a path: expected a store path's base name, <hash>-<name> (${baseName.slice(0, 200)})`,
      );
    }
    if (!(await deps.gc.unpin(row.id, hashPart))) {
      throw new CairnError('NOT_FOUND', `Cannot unpin a path: cache '${row.name}' has no pin of ${baseName}`);
    }
    await recordAudit(deps, c, { action: 'cache.unpin', target: row.name, detail: { path: baseName } });
    return c.body(null, 204);
  });
}
