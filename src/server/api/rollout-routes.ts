import type { Context, Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import { rollbackBodySchema } from '../../protocol/api-schemas.ts';
import { deployJsonSchema } from '../../protocol/deploy-json.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idPathSchema } from '../../protocol/request-params.ts';
import { assertDeploymentReader, assertFleetViewer, canReadDeployment } from '../auth/permissions.ts';
import type { ClosureRepository } from '../closures/closure-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import { activateRollout } from '../deployments/activate-rollout.ts';
import { type RollbackDeps, rollbackAgent } from '../deployments/rollback-agent.ts';
import type { EventBus } from '../events/event-bus.ts';
import { clientAddress } from '../http/client-address.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import { stagedStatus } from '../rollouts/staged-status.ts';
import type { ApiEnv } from './api-routes.ts';
import { toDeploymentInfo } from './deployment-info.ts';
import { MAX_DEPLOY_JSON_BYTES, parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';
import { rolloutEvents } from './rollout-events.ts';
import { registerRolloutOperations } from './rollout-operation-routes.ts';

/** `rollouts` routes: create from deploy.json, roll an agent back, show and follow a rollout. */
export function registerRolloutRoutes(
  api: Hono<ApiEnv>,
  deps: RollbackDeps & {
    flushLogs: () => Promise<void>;
    deployments: DeploymentRepository;
    bus: EventBus;
    baseUrl: (u: string) => string;
    rollouts: RolloutEngine;
    /** Closure sizes of what agents ran before, for the summary; without it they are unknown. */
    closures?: Pick<ClosureRepository, 'sizesFor'>;
  },
): void {
  const store = deps.rollouts.store;
  const rolloutUrl = (requestUrl: string, ws: string, id: number) =>
    `${deps.baseUrl(requestUrl)}/api/v1/workspaces/${ws}/rollouts/${id}`;

  /** A rollout as the API shows it: the deployments the principal may read. */
  const rolloutBody = async (c: Context<ApiEnv>, rolloutId: number) => {
    const rows = (await deps.deployments.byRollout(c.var.workspaceId, rolloutId)).filter((d) =>
      canReadDeployment(c.var.principal, d.agent_name),
    );
    // What each agent ran before, as its own deployments recorded it (never another agent's).
    const previous = rows.flatMap((d) =>
      d.previous_path === null ? [] : [{ agentId: d.agent_id, root: d.previous_path }],
    );
    const sizes =
      deps.closures && previous.length > 0
        ? await deps.closures.sizesFor(previous)
        : new Map<string, number>();
    const previousSize = (d: (typeof rows)[number]) =>
      d.previous_path === null ? null : (sizes.get(`${d.agent_id} ${d.previous_path}`) ?? null);
    return {
      rows,
      body: {
        id: rolloutId,
        url: rolloutUrl(c.req.url, c.req.param('ws') ?? 'default', rolloutId),
        deployments: rows.map((d) => toDeploymentInfo(d, previousSize(d))),
        staged: await stagedStatus(store, rolloutId),
      },
    };
  };

  // The body is deploy.json itself, so CI can POST the file as it is; ?agent= limits it to some agents.
  api.post('/workspaces/:ws/rollouts', async (c) => {
    // A token that may deploy to no agent is refused before its body is parsed or validated.
    assertFleetViewer(c.var.principal, 'create the deployment');
    const deploy = await parseJsonBody(c, deployJsonSchema, 'create the deployment', MAX_DEPLOY_JSON_BYTES);
    const only = c.req.queries('agent');
    const { rolloutId } = await activateRollout(deps, {
      principal: c.var.principal,
      workspaceId: c.var.workspaceId,
      deploy,
      only,
    });
    const { rows, body } = await rolloutBody(c, rolloutId);
    await recordAudit(deps, c, {
      action: 'rollout.create',
      target: String(rolloutId),
      detail: {
        agents: Object.fromEntries(rows.map((r) => [r.agent_name, r.store_path])),
        // What will run as root besides the closures' own activation: the audit must show it.
        ...(deploy.rollbackScript ? { rollbackScript: deploy.rollbackScript } : {}),
        ...(deploy.healthChecks ? { healthChecks: deploy.healthChecks } : {}),
        ...(deploy.rollout ? { rollout: body.staged?.policy ?? deploy.rollout } : {}),
      },
    });
    return c.json(body, 201);
  });

  // An explicit rollback is itself a deployment, with its own logs, to what the agent ran before
  // (or to the store path of deployment `to`).
  api.post('/workspaces/:ws/agents/:name/rollback', async (c) => {
    assertFleetViewer(c.var.principal, 'roll back');
    const body = await parseJsonBody(c, rollbackBodySchema, 'roll back');
    const { rolloutId } = await rollbackAgent(deps, {
      principal: c.var.principal,
      workspaceId: c.var.workspaceId,
      agent: c.req.param('name'),
      to: body.to,
      address: clientAddress(c),
    });
    return c.json((await rolloutBody(c, rolloutId)).body, 201);
  });

  const rolloutOr404 = async (c: Context<ApiEnv>, action: string) => {
    assertDeploymentReader(c.var.principal, action);
    const { id } = parseOrThrow(idPathSchema, c.req.param(), { action });
    if (!(await deps.deployments.rolloutExists(c.var.workspaceId, id))) {
      throw new CairnError('NOT_FOUND', `Cannot find rollout '${id}'`);
    }
    return id;
  };

  api.get('/workspaces/:ws/rollouts/:id', async (c) => {
    return c.json((await rolloutBody(c, await rolloutOr404(c, 'read a rollout'))).body);
  });

  // Follows a rollout: its deployments' states and logs as Server-Sent Events.
  api.get('/workspaces/:ws/rollouts/:id/events', async (c) => {
    const id = await rolloutOr404(c, 'follow a rollout');
    return rolloutEvents(
      c,
      { ...deps, store },
      { workspaceId: c.var.workspaceId, id, principal: c.var.principal },
    );
  });

  registerRolloutOperations(api, { ...deps, rolloutBody });
}
