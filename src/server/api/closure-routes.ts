import type { Hono } from 'hono';
import { CairnError } from '../../lib/cairn-error.ts';
import { deployJsonSchema } from '../../protocol/deploy-json.ts';
import { isAdmin, type Principal } from '../auth/principal.ts';
import type { ClosureRepository } from '../closures/closure-repository.ts';
import { diffDeployments } from '../closures/deployment-diff.ts';
import { planRollout } from '../closures/plan-rollout.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { ApiEnv } from './api-routes.ts';
import { MAX_DEPLOY_JSON_BYTES, parseJsonBody } from './parse-json-body.ts';

/** What the closure routes need. */
export interface ClosureRouteDeps {
  readonly agents: AgentRepository;
  readonly deployments: DeploymentRepository;
  readonly closures: ClosureRepository;
}

/** Who may read a deployment: admin, an activate token, or the agent it belongs to. */
function canRead(p: Principal, agent: string): boolean {
  return (
    isAdmin(p) || p.scopes.some((s) => s.kind === 'activate' || (s.kind === 'agent' && s.agent === agent))
  );
}

/**
 * Routes about closures: `GET /workspaces/:ws/deployments/diff?from=A&to=B` and
 * `POST /workspaces/:ws/plan`, behind the API's own authentication. Register them before the
 * deployment routes, so that `deployments/diff` is not taken for a deployment id.
 */
export function registerClosureRoutes(api: Hono<ApiEnv>, deps: ClosureRouteDeps): void {
  api.get('/workspaces/:ws/deployments/diff', async (c) => {
    const principal = c.var.principal;
    const workspaceId = c.var.workspaceId;
    if (!principal.scopes.some((s) => s.kind === 'admin' || s.kind === 'activate' || s.kind === 'agent')) {
      throw new CairnError(
        'FORBIDDEN',
        `Cannot diff deployments: token '${principal.tokenName}' lacks the admin, activate or agent scope`,
      );
    }
    const load = async (name: 'from' | 'to') => {
      const text = c.req.query(name);
      const id = Number(text);
      if (text === undefined || !Number.isSafeInteger(id) || id <= 0) {
        throw new CairnError(
          'INVALID_ARGUMENT',
          `Cannot diff deployments: ?${name}= must be a deployment id (${text ?? 'missing'})`,
        );
      }
      const d = await deps.deployments.byId(workspaceId, id);
      if (!d || !canRead(principal, d.agent_name))
        throw new CairnError('NOT_FOUND', `Cannot find deployment '${text}'`);
      return d;
    };
    const from = await load('from');
    const to = await load('to');
    return c.json(await diffDeployments(deps.closures, from, to));
  });

  api.post('/workspaces/:ws/plan', async (c) => {
    const deploy = await parseJsonBody(c, deployJsonSchema, 'plan the deployment', MAX_DEPLOY_JSON_BYTES);
    return c.json(
      await planRollout(deps, { principal: c.var.principal, workspaceId: c.var.workspaceId, deploy }),
    );
  });
}
