import type { Context, Hono } from 'hono';
import type { z } from 'zod';
import { CairnError } from '../../lib/cairn-error.ts';
import { abortBodySchema, promoteBodySchema, type RolloutInfo } from '../../protocol/api-schemas.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idPathSchema } from '../../protocol/request-params.ts';
import { canActivate } from '../auth/permissions.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { RolloutOperation } from '../rollouts/operate-rollout.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import type { ApiEnv } from './api-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';

/**
 * `POST .../rollouts/:id/pause|resume|promote|abort`: a person steers a staged rollout. Allowed
 * to a token that may deploy to every agent of the rollout; each is audited.
 */
export function registerRolloutOperations(
  api: Hono<ApiEnv>,
  deps: {
    deployments: DeploymentRepository;
    rollouts: RolloutEngine;
    audit: AuditRepository;
    now: () => number;
    rolloutBody: (c: Context<ApiEnv>, id: number) => Promise<{ body: RolloutInfo }>;
  },
): void {
  const operate = async (
    c: Context<ApiEnv>,
    name: string,
    read: (c: Context<ApiEnv>) => Promise<RolloutOperation>,
  ) => {
    const action = `${name} a rollout`;
    const { id } = parseOrThrow(idPathSchema, c.req.param(), { action });
    const o = await read(c);
    const rows = await deps.deployments.byRollout(c.var.workspaceId, id);
    if (rows.length === 0) throw new CairnError('NOT_FOUND', `Cannot find rollout '${id}'`);
    const denied = [...new Set(rows.map((r) => r.agent_name))].filter(
      (n) => !canActivate(c.var.principal, n),
    );
    if (denied.length > 0) {
      throw new CairnError(
        'FORBIDDEN',
        `Cannot ${action}: token '${c.var.principal.tokenName}' may not deploy to ${denied
          .slice(0, 5)
          .map((n) => `'${n}'`)
          .join(', ')}${denied.length > 5 ? ', …' : ''}`,
      );
    }
    const done = await deps.rollouts.operate(c.var.workspaceId, id, o, c.var.principal.tokenName);
    if (!done) {
      throw new CairnError(
        'CONFLICT',
        `Cannot ${name} rollout ${id}: it is not staged (it deployed at once)`,
      );
    }
    await recordAudit(deps, c, {
      action: `rollout.${name}`,
      target: String(id),
      ...(o.op === 'promote' || o.op === 'abort' ? { detail: { ...o } } : {}),
    });
    return c.json((await deps.rolloutBody(c, id)).body);
  };
  const body = async <T extends z.ZodType>(c: Context<ApiEnv>, schema: T, action: string) =>
    (c.req.header('content-length') ?? '0') === '0' && !c.req.header('transfer-encoding')
      ? (parseOrThrow(schema, {}, { action }) as z.output<T>)
      : await parseJsonBody(c, schema, action);

  api.post('/workspaces/:ws/rollouts/:id/pause', (c) => operate(c, 'pause', async () => ({ op: 'pause' })));
  api.post('/workspaces/:ws/rollouts/:id/resume', (c) =>
    operate(c, 'resume', async () => ({ op: 'resume' })),
  );
  api.post('/workspaces/:ws/rollouts/:id/promote', (c) =>
    operate(c, 'promote', async (c) => {
      const b = await body(c, promoteBodySchema, 'promote a rollout');
      return { op: 'promote', full: b.full === true };
    }),
  );
  api.post('/workspaces/:ws/rollouts/:id/abort', (c) =>
    operate(c, 'abort', async (c) => {
      const b = await body(c, abortBodySchema, 'abort a rollout');
      return { op: 'abort', revert: b.revert === true };
    }),
  );
}
