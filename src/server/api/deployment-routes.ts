import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { CairnError } from '../../lib/cairn-error.ts';
import { parseOrThrow } from '../../protocol/parse-or-throw.ts';
import { idPathSchema, limitParamSchema, seqParamSchema } from '../../protocol/request-params.ts';
import { assertDeploymentReader, canReadDeployment } from '../auth/permissions.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { ApiEnv } from './api-routes.ts';
import { toDeploymentInfo } from './deployment-info.ts';

const listQuerySchema = z.object({ agent: z.string().optional(), limit: limitParamSchema(50, 1000) });
const logsQuerySchema = z.object({ after: seqParamSchema });

/** `deployments` routes: list, show, logs. */
export function registerDeploymentRoutes(
  api: Hono<ApiEnv>,
  deps: { agents: AgentRepository; deployments: DeploymentRepository },
): void {
  api.get('/workspaces/:ws/deployments', async (c) => {
    const action = 'list deployments';
    assertDeploymentReader(c.var.principal, action);
    const query = parseOrThrow(listQuerySchema, c.req.query(), { action });
    let agentId: number | undefined;
    if (query.agent !== undefined) {
      const agent = await deps.agents.byName(c.var.workspaceId, query.agent);
      if (!agent) throw new CairnError('NOT_FOUND', `Cannot find agent '${query.agent}'`);
      agentId = agent.id;
    }
    const rows = await deps.deployments.list(c.var.workspaceId, {
      limit: query.limit,
      ...(agentId === undefined ? {} : { agentId }),
    });
    return c.json({
      deployments: rows
        .filter((d) => canReadDeployment(c.var.principal, d.agent_name))
        .map((d) => toDeploymentInfo(d)),
    });
  });

  const deploymentOr404 = async (c: Context<ApiEnv>) => {
    const action = 'read a deployment';
    assertDeploymentReader(c.var.principal, action);
    const { id } = parseOrThrow(idPathSchema, c.req.param(), { action });
    const d = await deps.deployments.byId(c.var.workspaceId, id);
    if (!d || !canReadDeployment(c.var.principal, d.agent_name))
      throw new CairnError('NOT_FOUND', `Cannot find deployment '${id}'`);
    return d;
  };

  api.get('/workspaces/:ws/deployments/:id', async (c) => {
    return c.json(toDeploymentInfo(await deploymentOr404(c)));
  });

  api.get('/workspaces/:ws/deployments/:id/logs', async (c) => {
    const d = await deploymentOr404(c);
    const { after } = parseOrThrow(logsQuerySchema, c.req.query(), { action: 'read the log' });
    const lines = await deps.deployments.logs(d.id, after);
    return c.json({ lines: lines.map(({ seq, t, text }) => ({ seq, t, text })) });
  });
}
