import type { Context, Hono } from 'hono';
import type { z } from 'zod';
import { abortBodySchema, promoteBodySchema, type RolloutInfo } from '../../protocol/api-schemas.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idPathSchema } from '../../protocol/request-params.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import { steerRollout } from '../deployments/steer-rollout.ts';
import { clientAddress } from '../http/client-address.ts';
import type { RolloutOperation } from '../rollouts/operate-rollout.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import type { ApiEnv } from './api-routes.ts';
import { parseJsonBody } from './parse-json-body.ts';

/**
 * `POST .../rollouts/:id/pause|resume|promote|abort`: a person steers a staged rollout. Allowed
 * to a token that may deploy to every agent of the rollout; each is audited ({@link steerRollout}).
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
    await steerRollout(deps, {
      principal: c.var.principal,
      workspaceId: c.var.workspaceId,
      rolloutId: id,
      operation: o,
      address: clientAddress(c),
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
