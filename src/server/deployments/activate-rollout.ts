import { CairnError } from '../../lib/cairn-error.ts';
import { parseStorePath } from '../../nix/store-path.ts';
import type { DeployJson } from '../../protocol/deploy-json.ts';
import { SUPERSEDED_REASON } from '../../protocol/deployment-state.ts';
import { validationError } from '../../protocol/parse-or-throw.ts';
import { canActivate } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import type { AgentRepository } from '../db/agent-repository.ts';
import type { CacheRepository } from '../db/cache-repository.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { PathIndex } from '../db/path-index.ts';
import type { EventBus } from '../events/event-bus.ts';
import { planBatches } from '../rollouts/plan-batches.ts';
import type { RolloutEngine } from '../rollouts/rollout-engine.ts';
import type { StoredPolicy } from '../rollouts/rollout-snapshot.ts';

/** Seconds an agent has, by default, to get a deployment confirmed over a new connection. */
export const DEFAULT_CONFIRM_TIMEOUT_SECONDS = 60;

/** What {@link activateRollout} needs. */
export interface ActivateDeps {
  readonly agents: AgentRepository;
  readonly caches: CacheRepository;
  readonly index: PathIndex;
  readonly deployments: DeploymentRepository;
  readonly bus: EventBus;
  readonly now: () => number;
  /** Runs staged rollouts; a deploy.json with a `rollout` policy needs it. */
  readonly rollouts?: Pick<RolloutEngine, 'step'>;
}

/**
 * Turns a deploy.json into a rollout: checks every agent and store path first and reports all
 * problems together (nothing is created then), creates one deployment per agent, cancels the
 * agents' older deployments that had not started, and tells connected agents.
 */
export async function activateRollout(
  deps: ActivateDeps,
  request: {
    principal: Principal;
    workspaceId: number;
    deploy: DeployJson;
    only?: readonly string[] | undefined;
    /** `rollback` for a deployment made by `cairn deploy rollback`. */
    kind?: 'deploy' | 'rollback';
  },
): Promise<{ rolloutId: number; deployments: Array<{ id: number; agent: string }> }> {
  const { principal, workspaceId, deploy } = request;
  const problems: Array<{ field: string; message: string }> = [];
  let names = Object.keys(deploy.agents);
  if (request.only && request.only.length > 0) {
    // Sets, not arrays: thousands of ?agent= against a file of 100,000 agents stays linear.
    const inFile = new Set(names);
    const only = new Set(request.only);
    for (const n of only) {
      if (!inFile.has(n))
        problems.push({ field: `agents.${n}`, message: 'is selected with --agent but not in deploy.json' });
    }
    names = names.filter((n) => only.has(n));
  }
  // Authorization first, and on its own: a token that may not deploy learns nothing else.
  const denied = names.filter((n) => !canActivate(principal, n));
  if (denied.length > 0) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot create the deployment: token '${principal.tokenName}' may not deploy to ${denied.map((n) => `'${n}'`).join(', ')}`,
    );
  }
  const rows = await deps.agents.byNames(workspaceId, names);
  const byName = new Map(rows.map((r) => [r.name, r]));
  for (const n of names) {
    if (!byName.has(n))
      problems.push({
        field: `agents.${n}`,
        message: `unknown agent '${n}' (create it with: cairn agent create ${n})`,
      });
  }
  // Every path must be in a cache of the workspace before agents hear of it: a path announced
  // early would make Nix on the agent remember the miss.
  const wanted = new Map<string, string>();
  for (const n of names) wanted.set(deploy.agents[n]!, `agents.${n}`);
  for (const [system, p] of Object.entries(deploy.rollbackScript ?? {}))
    wanted.set(p, `rollbackScript.${system}`);
  const caches = await deps.caches.list(workspaceId);
  const found = new Set<string>();
  const hashParts = [...wanted.keys()].map((p) => parseStorePath(p).hashPart);
  for (const c of caches) {
    for (const h of await deps.index.existingHashParts(c.id, hashParts)) found.add(h);
  }
  for (const [p, field] of wanted) {
    if (!found.has(parseStorePath(p).hashPart)) {
      problems.push({
        field,
        message: `${p} is in no cache of this workspace; push it first (nix copy --to or cairn push)`,
      });
    }
  }
  for (const key of Object.keys(deploy.healthChecks ?? {})) {
    if (key !== '*' && !Object.hasOwn(deploy.agents, key)) {
      problems.push({
        field: `healthChecks.${key}`,
        message: `names no agent of this file (use "*" for every agent)`,
      });
    }
  }
  // An agent runs the checks for every agent, then its own.
  const checksFor = (name: string): string | null => {
    const own = (key: string) =>
      deploy.healthChecks && Object.hasOwn(deploy.healthChecks, key) ? deploy.healthChecks[key]! : [];
    const checks = [...own('*'), ...own(name)];
    return checks.length === 0 ? null : JSON.stringify(checks);
  };
  // A staged rollout's batches, planned now so that a canary selector matching nobody is refused.
  let staged: { policy: string; batchCount: number; batchOf: Map<number, number> } | undefined;
  if (deploy.rollout && names.every((n) => byName.has(n))) {
    const ids = names.map((n) => byName.get(n)!.id);
    const tags = await deps.agents.tagsOf(ids);
    const plan = planBatches(
      names.map((n) => ({ id: byName.get(n)!.id, name: n, tags: tags.get(byName.get(n)!.id) ?? [] })),
      deploy.rollout,
    );
    if (plan.problems) problems.push(...plan.problems);
    else {
      const batchOf = new Map<number, number>();
      plan.batches.forEach((b, i) => {
        for (const id of b.agentIds) batchOf.set(id, i);
      });
      const stored: StoredPolicy = {
        ...deploy.rollout,
        plan: plan.batches.map((b) => ({ label: b.label, advance: b.advance })),
      };
      staged = { policy: JSON.stringify(stored), batchCount: plan.batches.length, batchOf };
    }
  }
  if (problems.length > 0) throw validationError('create the deployment', problems);
  if (staged && !deps.rollouts) throw new Error('a staged rollout needs the rollout engine');

  const now = deps.now();
  // Rollback scripts are kept by system; the agent's script is picked when it is told, by the system it reports.
  const rollback =
    deploy.rollbackScript && Object.keys(deploy.rollbackScript).length > 0
      ? JSON.stringify(deploy.rollbackScript)
      : null;
  const { rolloutId, created, cancelled } = await deps.deployments.createRollout({
    workspaceId,
    createdBy: principal.tokenName,
    now,
    ...(staged ? { staged } : {}),
    deployments: names.map((n) => {
      const agent = byName.get(n)!;
      return {
        batch: staged?.batchOf.get(agent.id),
        previousPath: agent.store_path,
        agentId: agent.id,
        storePath: deploy.agents[n]!,
        rollbackScript: rollback,
        exit4: deploy.exit4 ?? 'fail',
        healthChecks: checksFor(n),
        confirmTimeout: deploy.confirmTimeoutSeconds ?? DEFAULT_CONFIRM_TIMEOUT_SECONDS,
        kind: request.kind ?? 'deploy',
      };
    }),
  });
  const nameById = new Map(rows.map((r) => [r.id, r.name]));
  for (const c of cancelled) {
    deps.bus.publish('deployment', {
      workspaceId,
      rolloutId: c.rolloutId,
      deploymentId: c.id,
      agent: nameById.get(c.agentId) ?? '',
      state: 'cancelled',
      step: null,
      reason: SUPERSEDED_REASON,
    });
  }
  // A newer deployment may have taken agents from a staged rollout: its engine sees to it.
  for (const rollout of new Set(cancelled.map((c) => c.rolloutId))) await deps.rollouts?.step(rollout);
  if (staged) {
    // The engine opens the first batch (or waits at its gate) before the answer goes out.
    await deps.rollouts!.step(rolloutId);
  } else {
    // Agents hear of it first, from the rows just written: an agent still running an earlier
    // deployment must finish it first and is told that one again (one query for the whole rollout).
    const running = await deps.deployments.runningOf(created.map((d) => d.agent_id));
    for (const d of created) {
      deps.bus.publish('desired', { agentId: d.agent_id, deployment: running.get(d.agent_id) ?? d });
    }
  }
  const deployments = created.map((d) => ({ id: d.id, agent: nameById.get(d.agent_id)! }));
  return { rolloutId, deployments: deployments.sort((a, b) => (a.agent < b.agent ? -1 : 1)) };
}
