import type { Context, Hono } from 'hono';
import { streamSSE } from 'hono/streaming';
import { CairnError } from '../../lib/cairn-error.ts';
import { type DeploymentInfo, rollbackBodySchema } from '../../protocol/api-schemas.ts';
import { deployJsonSchema } from '../../protocol/deploy-json.ts';
import { canActivate, isAdmin, type Principal } from '../auth/principal.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { AuditRepository } from '../db/audit-repository.ts';
import { type DeploymentRepository, type DeploymentRow, OPEN_STATES } from '../db/deployment-repository.ts';
import { IN_LIST_SIZE, inChunks } from '../db/in-chunks.ts';
import { type ActivateDeps, activateRollout } from '../deployments/activate-rollout.ts';
import type { DeploymentEvent, EventBus, LogEvent } from '../events/event-bus.ts';
import type { ApiEnv } from './api-routes.ts';
import { MAX_DEPLOY_JSON_BYTES, parseJsonBody } from './parse-json-body.ts';
import { recordAudit } from './record-audit.ts';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** A deployment row as the API shows it. */
export function toDeploymentInfo(d: DeploymentRow): DeploymentInfo {
  return {
    id: d.id,
    rolloutId: d.rollout_id,
    agent: d.agent_name,
    storePath: d.store_path,
    kind: d.kind,
    state: d.state,
    step: d.step,
    reason: d.reason,
    rebootRequired: d.reboot_required === 1,
    createdAt: new Date(d.created_at).toISOString(),
    startedAt: iso(d.started_at),
    finishedAt: iso(d.finished_at),
  };
}

/** Throws FORBIDDEN for tokens that may read no deployment at all (cache-only tokens). */
function assertDeploymentReader(p: Principal, action: string): void {
  if (!p.scopes.some((s) => s.kind === 'admin' || s.kind === 'activate' || s.kind === 'agent')) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot ${action}: token '${p.tokenName}' lacks the admin, activate or agent scope`,
    );
  }
}

/** Who may read a deployment: admin, an activate token, or the agent it belongs to. */
function canRead(p: Principal, agent: string): boolean {
  return (
    isAdmin(p) || p.scopes.some((s) => s.kind === 'activate' || (s.kind === 'agent' && s.agent === agent))
  );
}

/** `rollouts` and `deployments` routes: create from deploy.json, follow, list, show, logs. */
export function registerDeploymentRoutes(
  api: Hono<ApiEnv>,
  deps: ActivateDeps & {
    audit: AuditRepository;
    flushLogs: () => Promise<void>;
    agents: AgentRepository;
    deployments: DeploymentRepository;
    bus: EventBus;
    baseUrl: (u: string) => string;
  },
): void {
  const rolloutUrl = (requestUrl: string, ws: string, id: number) =>
    `${deps.baseUrl(requestUrl)}/api/v1/workspaces/${ws}/rollouts/${id}`;

  /** Records a new rollout in the audit log and answers with it (201). */
  const answerNewRollout = async (c: Context<ApiEnv>, rolloutId: number) => {
    const rows = await deps.deployments.byRollout(c.var.workspaceId, rolloutId);
    await recordAudit(deps, c, {
      action: rows.some((r) => r.kind === 'rollback') ? 'agent.rollback' : 'rollout.create',
      target: String(rolloutId),
      detail: { agents: Object.fromEntries(rows.map((r) => [r.agent_name, r.store_path])) },
    });
    const body = {
      id: rolloutId,
      url: rolloutUrl(c.req.url, c.req.param('ws') ?? 'default', rolloutId),
      deployments: rows.map(toDeploymentInfo),
    };
    return c.json(body, 201);
  };

  // The body is deploy.json itself, so CI can POST the file as it is; ?agent= limits it to some agents.
  api.post('/workspaces/:ws/rollouts', async (c) => {
    const deploy = await parseJsonBody(c, deployJsonSchema, 'create the deployment', MAX_DEPLOY_JSON_BYTES);
    const only = c.req.queries('agent');
    const { rolloutId } = await activateRollout(deps, {
      principal: c.var.principal,
      workspaceId: c.var.workspaceId,
      deploy,
      only,
    });
    return await answerNewRollout(c, rolloutId);
  });

  // An explicit rollback is itself a deployment, with its own logs, to what the agent ran before
  // (or to the store path of deployment `to`).
  api.post('/workspaces/:ws/agents/:name/rollback', async (c) => {
    const body = await parseJsonBody(c, rollbackBodySchema, 'roll back');
    const name = c.req.param('name');
    if (!canActivate(c.var.principal, name)) {
      throw new CairnError(
        'FORBIDDEN',
        `Cannot roll back '${name}': token '${c.var.principal.tokenName}' may not deploy to it`,
      );
    }
    const agent = await deps.agents.byName(c.var.workspaceId, name);
    if (!agent) throw new CairnError('NOT_FOUND', `Cannot roll back: no agent '${name}'`);
    const target = await deps.deployments.rollbackTarget(agent.id, body.to);
    if (!target) {
      throw new CairnError(
        body.to === undefined ? 'INVALID_ARGUMENT' : 'NOT_FOUND',
        body.to === undefined
          ? `Cannot roll back ${name}: it has no earlier succeeded deployment to go back to`
          : `Cannot roll back ${name}: deployment ${body.to} is not one of its deployments`,
      );
    }
    const { rolloutId } = await activateRollout(deps, {
      principal: c.var.principal,
      workspaceId: c.var.workspaceId,
      deploy: { agents: { [name]: target.store_path } },
      kind: 'rollback',
    });
    return await answerNewRollout(c, rolloutId);
  });

  const rolloutOr404 = async (workspaceId: number, idText: string) => {
    const id = Number(idText);
    if (!Number.isSafeInteger(id) || !(await deps.deployments.rolloutExists(workspaceId, id))) {
      throw new CairnError('NOT_FOUND', `Cannot find rollout '${idText}'`);
    }
    return id;
  };

  api.get('/workspaces/:ws/rollouts/:id', async (c) => {
    assertDeploymentReader(c.var.principal, 'read a rollout');
    const id = await rolloutOr404(c.var.workspaceId, c.req.param('id'));
    const rows = (await deps.deployments.byRollout(c.var.workspaceId, id)).filter((d) =>
      canRead(c.var.principal, d.agent_name),
    );
    return c.json({
      id,
      url: rolloutUrl(c.req.url, c.req.param('ws'), id),
      deployments: rows.map(toDeploymentInfo),
    });
  });

  // Follows a rollout: its deployments' states and logs as Server-Sent Events, ending with `end`
  // once every deployment is final. States are protocol events, never parsed from log lines.
  api.get('/workspaces/:ws/rollouts/:id/events', async (c) => {
    assertDeploymentReader(c.var.principal, 'follow a rollout');
    const workspaceId = c.var.workspaceId;
    const id = await rolloutOr404(workspaceId, c.req.param('id'));
    const principal = c.var.principal;
    return streamSSE(c, async (stream) => {
      // Events wait here to be written. Taken from the front by swapping arrays, not shift():
      // a rollout to 10,000 agents queues tens of thousands, and shift() is linear.
      type Item = { kind: 'state'; e: DeploymentEvent } | { kind: 'log'; e: LogEvent };
      let queue: Item[] = [];
      let taking: Item[] = [];
      let head = 0;
      const next = (): Item | undefined => {
        if (head >= taking.length) {
          taking = queue;
          queue = [];
          head = 0;
        }
        return taking[head++];
      };
      let wake: (() => void) | undefined;
      const push = (item: Item) => {
        queue.push(item);
        wake?.();
      };
      // Subscribe before reading the database, so nothing falls between the two.
      const unsubs = [
        deps.bus.subscribe('deployment', (e) => {
          if (e.rolloutId === id) push({ kind: 'state', e });
        }),
        deps.bus.subscribe('log', (e) => {
          if (e.rolloutId === id) push({ kind: 'log', e });
        }),
      ];
      stream.onAbort(() => {
        for (const u of unsubs) u();
        wake?.();
      });
      try {
        // Lines still in the log writer's buffer were published before this stream subscribed.
        await deps.flushLogs();
        const rows = (await deps.deployments.byRollout(workspaceId, id)).filter((d) =>
          canRead(principal, d.agent_name),
        );
        const states = new Map(rows.map((d) => [d.id, d.state]));
        const isOpen = (state: string) => (OPEN_STATES as readonly string[]).includes(state);
        // Counted, not recomputed per event: a rollout to 10,000 agents sends tens of thousands.
        let openCount = rows.filter((d) => isOpen(d.state)).length;
        const lastSeq = new Map<number, number>();
        // Lines of a thousand deployments per query, not one query per deployment.
        for (const part of inChunks(rows, IN_LIST_SIZE)) {
          const logs = await deps.deployments.logsOf(part.map((d) => d.id));
          for (const d of part) {
            await stream.writeSSE({
              event: 'state',
              data: JSON.stringify({
                deploymentId: d.id,
                agent: d.agent_name,
                state: d.state,
                step: d.step,
                reason: d.reason,
              }),
            });
            const lines = logs.get(d.id) ?? [];
            if (lines.length > 0) {
              lastSeq.set(d.id, lines.at(-1)!.seq);
              await stream.writeSSE({
                event: 'log',
                data: JSON.stringify({
                  deploymentId: d.id,
                  agent: d.agent_name,
                  lines: lines.map(({ seq, t, text }) => ({ seq, t, text })),
                }),
              });
            }
          }
        }
        const open = () => openCount > 0;
        let lastWrite = Date.now();
        let written = 0;
        while (open() && !stream.aborted) {
          // Writes that do not wait would otherwise run as one long chain of microtasks, holding
          // up every other request: let the event loop turn now and then.
          if (++written % 256 === 0) await new Promise((resolve) => setImmediate(resolve));
          const item = next();
          if (!item) {
            await new Promise<void>((resolve) => {
              wake = resolve;
              setTimeout(resolve, 15_000).unref();
            });
            wake = undefined;
            // Keep proxies from closing an idle stream.
            if (queue.length === 0 && head >= taking.length && Date.now() - lastWrite >= 14_000) {
              await stream.write(': keep-alive\n\n');
              lastWrite = Date.now();
            }
            continue;
          }
          if (!states.has(item.e.deploymentId)) continue;
          lastWrite = Date.now();
          if (item.kind === 'state') {
            if (isOpen(states.get(item.e.deploymentId)!) && !isOpen(item.e.state)) openCount--;
            else if (!isOpen(states.get(item.e.deploymentId)!) && isOpen(item.e.state)) openCount++;
            states.set(item.e.deploymentId, item.e.state);
            const { deploymentId, agent, state, step, reason } = item.e;
            await stream.writeSSE({
              event: 'state',
              data: JSON.stringify({ deploymentId, agent, state, step, reason }),
            });
          } else {
            const seen = lastSeq.get(item.e.deploymentId) ?? 0;
            const lines = item.e.lines.filter((l) => l.seq > seen);
            if (lines.length === 0) continue;
            lastSeq.set(item.e.deploymentId, lines.at(-1)!.seq);
            await stream.writeSSE({
              event: 'log',
              data: JSON.stringify({ deploymentId: item.e.deploymentId, agent: item.e.agent, lines }),
            });
          }
        }
        if (!stream.aborted) await stream.writeSSE({ event: 'end', data: JSON.stringify({ rolloutId: id }) });
      } finally {
        for (const u of unsubs) u();
      }
    });
  });

  api.get('/workspaces/:ws/deployments', async (c) => {
    assertDeploymentReader(c.var.principal, 'list deployments');
    const agentName = c.req.query('agent');
    const limit = Math.min(Math.max(Number(c.req.query('limit') ?? 50) || 50, 1), 1000);
    let agentId: number | undefined;
    if (agentName !== undefined) {
      const agent = await deps.agents.byName(c.var.workspaceId, agentName);
      if (!agent) throw new CairnError('NOT_FOUND', `Cannot find agent '${agentName}'`);
      agentId = agent.id;
    }
    const rows = await deps.deployments.list(c.var.workspaceId, {
      limit,
      ...(agentId === undefined ? {} : { agentId }),
    });
    return c.json({
      deployments: rows.filter((d) => canRead(c.var.principal, d.agent_name)).map(toDeploymentInfo),
    });
  });

  const deploymentOr404 = async (workspaceId: number, idText: string, p: Principal) => {
    assertDeploymentReader(p, 'read a deployment');
    const id = Number(idText);
    const d = Number.isSafeInteger(id) ? await deps.deployments.byId(workspaceId, id) : undefined;
    if (!d || !canRead(p, d.agent_name))
      throw new CairnError('NOT_FOUND', `Cannot find deployment '${idText}'`);
    return d;
  };

  api.get('/workspaces/:ws/deployments/:id', async (c) => {
    return c.json(
      toDeploymentInfo(await deploymentOr404(c.var.workspaceId, c.req.param('id'), c.var.principal)),
    );
  });

  api.get('/workspaces/:ws/deployments/:id/logs', async (c) => {
    const d = await deploymentOr404(c.var.workspaceId, c.req.param('id'), c.var.principal);
    const after = Math.max(0, Number(c.req.query('after') ?? 0) || 0);
    const lines = await deps.deployments.logs(d.id, after);
    return c.json({ lines: lines.map(({ seq, t, text }) => ({ seq, t, text })) });
  });
}
