import type { Hono } from 'hono';
import { z } from 'zod';
import { CairnError } from '../../lib/cairn-error.ts';
import { planQuerySchema } from '../../protocol/api-schemas.ts';
import { deployJsonSchema } from '../../protocol/deploy-json.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idParamSchema } from '../../protocol/request-params.ts';
import { assertDeploymentReader, assertFleetViewer, canReadDeployment } from '../auth/permissions.ts';
import type { ClosureRepository } from '../closures/closure-repository.ts';
import { diffDeployments } from '../closures/deployment-diff.ts';
import {
  DEFAULT_DRY_ACTIVATE_TIMEOUT_SECONDS,
  DEFAULT_PLAN_TIMEOUT_SECONDS,
  type PlanAsker,
  planRollout,
} from '../closures/plan-rollout.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { ApiEnv } from './api-routes.ts';
import { MAX_DEPLOY_JSON_BYTES, parseJsonBody } from './parse-json-body.ts';

/** What the closure routes need. */
export interface ClosureRouteDeps {
  readonly agents: AgentRepository;
  readonly deployments: DeploymentRepository;
  readonly closures: ClosureRepository;
  /** Asks connected agents' machines for their part of a plan; without it, plans are estimates. */
  readonly planAsker?: PlanAsker;
}

const diffQuerySchema = z.object({ from: idParamSchema, to: idParamSchema });

/**
 * Routes about closures: `GET /workspaces/:ws/deployments/diff?from=A&to=B` and
 * `POST /workspaces/:ws/plan`, behind the API's own authentication. Register them before the
 * deployment routes, so that `deployments/diff` is not taken for a deployment id.
 */
export function registerClosureRoutes(api: Hono<ApiEnv>, deps: ClosureRouteDeps): void {
  api.get('/workspaces/:ws/deployments/diff', async (c) => {
    const principal = c.var.principal;
    const workspaceId = c.var.workspaceId;
    const action = 'diff deployments';
    assertDeploymentReader(principal, action);
    const ids = parseOrThrow(diffQuerySchema, c.req.query(), { action });
    const load = async (id: number) => {
      const d = await deps.deployments.byId(workspaceId, id);
      if (!d || !canReadDeployment(principal, d.agent_name))
        throw new CairnError('NOT_FOUND', `Cannot find deployment '${id}'`);
      return d;
    };
    const from = await load(ids.from);
    const to = await load(ids.to);
    return c.json(await diffDeployments(deps.closures, from, to));
  });

  api.post('/workspaces/:ws/plan', async (c) => {
    // A token that may deploy to no agent is refused before its body is parsed or validated.
    assertFleetViewer(c.var.principal, 'plan the deployment');
    const query = parseOrThrow(planQuerySchema, c.req.query(), { action: 'plan the deployment' });
    const deploy = await parseJsonBody(c, deployJsonSchema, 'plan the deployment', MAX_DEPLOY_JSON_BYTES);
    const dryActivate = query.dryActivate === 'true';
    const seconds =
      query.timeout ?? (dryActivate ? DEFAULT_DRY_ACTIVATE_TIMEOUT_SECONDS : DEFAULT_PLAN_TIMEOUT_SECONDS);
    const machines =
      query.machines !== 'false' && deps.planAsker
        ? { asker: deps.planAsker, dryActivate, timeoutMs: seconds * 1000 }
        : undefined;
    return c.json(
      await planRollout(deps, {
        principal: c.var.principal,
        workspaceId: c.var.workspaceId,
        deploy,
        ...(machines ? { machines } : {}),
      }),
    );
  });
}
