import { CairnError } from '../../lib/cairn-error.ts';
import { diffClosures } from '../../nix/closure-diff.ts';
import { DISK_MARGIN, type MachinePlan } from '../../protocol/agent-protocol.ts';
import type { MachinePlanInfo, RolloutPlan } from '../../protocol/api-schemas.ts';
import type { DeployJson } from '../../protocol/deploy-json.ts';
import { validationError } from '../../protocol/parse-or-throw.ts';
import { canActivate } from '../auth/permissions.ts';
import type { Principal } from '../auth/principal.ts';
import type { AgentRepository, AgentRow } from '../db/agent-repository.ts';
import type { ClosureRepository } from './closure-repository.ts';
import { knownClosure } from './known-closure.ts';

/** How long a plan waits for the machines by default, in seconds (`timeout` in the API's query). */
export const DEFAULT_PLAN_TIMEOUT_SECONDS = 30;
/** The same with dry-activate: the machines download the closure first. */
export const DEFAULT_DRY_ACTIVATE_TIMEOUT_SECONDS = 240;

/** What the server asks an agent's machine about a deployment (see `AgentHub.askPlan`). */
export interface PlanQuestion {
  readonly storePath: string;
  readonly rollbackScript: string | null;
  readonly dryActivate: boolean;
  readonly timeoutMs: number;
}

/** How asking a machine ended: `not-here` when the agent holds no connection to this replica. */
export type MachinePlanOutcome =
  | { readonly status: 'answered'; readonly plan: MachinePlan }
  | { readonly status: 'not-here' }
  | { readonly status: 'unsupported'; readonly protocol: number }
  | { readonly status: 'timeout' }
  | { readonly status: 'failed'; readonly error: string };

/** Who asks the machines (the agent hub). */
export interface PlanAsker {
  askPlan(agentId: number, question: PlanQuestion): Promise<MachinePlanOutcome>;
}

/** How a plan asks the machines; without it, the plan is the server's estimate alone. */
export interface MachineQuestions {
  readonly asker: PlanAsker;
  readonly dryActivate: boolean;
  readonly timeoutMs: number;
}

/**
 * What activating a deploy.json would do, changing nothing: per agent, the diff between the
 * closure it runs now and the proposed one (each as the caches verified it, else as that agent
 * itself reported it, see `knownClosure`), and what it would download. Problems (unknown agents, agents the token may not deploy to)
 * are reported together, as `deploy activate` does.
 */
export async function planRollout(
  deps: { agents: AgentRepository; closures: ClosureRepository },
  request: { principal: Principal; workspaceId: number; deploy: DeployJson; machines?: MachineQuestions },
): Promise<RolloutPlan> {
  const { principal, workspaceId, deploy, machines } = request;
  const names = Object.keys(deploy.agents).sort();
  const rows = new Map((await deps.agents.byNames(workspaceId, names)).map((r) => [r.name, r]));
  const denied = names.filter((n) => !canActivate(principal, n));
  if (denied.length > 0) {
    throw new CairnError(
      'FORBIDDEN',
      `Cannot plan the deployment: token '${principal.tokenName}' may not deploy to ${denied.map((n) => `'${n}'`).join(', ')}`,
    );
  }
  const problems: Array<{ field: string; message: string }> = [];
  for (const n of names) {
    if (!rows.has(n)) problems.push({ field: `agents.${n}`, message: `unknown agent '${n}'` });
  }
  if (problems.length > 0) throw validationError('plan the deployment', problems);
  // Every machine at once: each answer takes as long as its Nix does.
  const answers = new Map(
    await Promise.all(
      names.map(async (name) => {
        const agent = rows.get(name)!;
        if (!machines) return [name, undefined] as const;
        const info = await askMachine(deps.closures, { workspaceId, agent, deploy, machines });
        return [name, info] as const;
      }),
    ),
  );
  const plans: RolloutPlan['agents'] = [];
  for (const name of names) {
    const agent = rows.get(name)!;
    const proposedPath = deploy.agents[name]!;
    const viewer = { agentId: agent.id, agentName: name };
    const current = await knownClosure(deps.closures, workspaceId, agent.store_path, viewer);
    const proposed = await knownClosure(deps.closures, workspaceId, proposedPath, viewer);
    const downloads = [...proposed.infos].filter(([p]) => !current.infos.has(p));
    const fileSizes = await deps.closures.fileSizes(
      workspaceId,
      downloads.map(([p]) => p),
    );
    let fileSize = 0;
    for (const size of fileSizes.values()) fileSize += size;
    plans.push({
      agent: name,
      current: {
        deploymentId: null,
        agent: name,
        storePath: agent.store_path,
        source: current.source,
        reportedBy: current.reportedBy,
        missing: current.missing,
      },
      proposed: {
        deploymentId: null,
        agent: name,
        storePath: proposedPath,
        source: proposed.source,
        reportedBy: proposed.reportedBy,
        missing: proposed.missing,
      },
      unchanged: agent.store_path === proposedPath,
      diff: diffClosures(current.infos, proposed.infos) as RolloutPlan['agents'][number]['diff'],
      download: {
        paths: downloads.length,
        narSize: downloads.reduce((sum, [, info]) => sum + info.narSize, 0),
        fileSize,
        filePaths: fileSizes.size,
      },
      ...(answers.get(name) ? { machine: answers.get(name)! } : {}),
    });
  }
  return { agents: plans };
}

/** The fields of an entry whose machine said nothing. */
const NOTHING: Omit<MachinePlanInfo, 'status' | 'message'> = {
  download: null,
  unavailable: [],
  truncated: false,
  freeBytes: null,
  diskOk: null,
  kind: null,
  dryActivate: null,
};

/** Asks one agent's machine, and turns its answer (or its silence) into the plan's entry. */
async function askMachine(
  closures: ClosureRepository,
  o: { workspaceId: number; agent: AgentRow; deploy: DeployJson; machines: MachineQuestions },
): Promise<MachinePlanInfo> {
  const { agent, deploy, machines } = o;
  const storePath = deploy.agents[agent.name]!;
  const estimate = 'the server-side estimate stands';
  if (agent.store_path === storePath)
    return { status: 'unchanged', message: 'runs the proposed path already: not asked', ...NOTHING };
  const rollbackScript =
    agent.system !== null && Object.hasOwn(deploy.rollbackScript ?? {}, agent.system)
      ? (deploy.rollbackScript?.[agent.system] ?? null)
      : null;
  const outcome = await machines.asker.askPlan(agent.id, {
    storePath,
    rollbackScript,
    dryActivate: machines.dryActivate,
    timeoutMs: machines.timeoutMs,
  });
  switch (outcome.status) {
    case 'not-here':
      return agent.online
        ? {
            status: 'elsewhere',
            message: `not connected to this server process (another replica, or reconnecting): not asked; ${estimate}`,
            ...NOTHING,
          }
        : { status: 'offline', message: `offline: not asked; ${estimate}`, ...NOTHING };
    case 'unsupported':
      return {
        status: 'unsupported',
        message: `its agent (protocol ${outcome.protocol}) cannot plan: upgrade it to ask the machine; ${estimate}`,
        ...NOTHING,
      };
    case 'timeout':
      return {
        status: 'timeout',
        message: `no answer within ${Math.round(machines.timeoutMs / 1000)}s (--timeout); ${estimate}`,
        ...NOTHING,
      };
    case 'failed':
      return {
        status: 'failed',
        message: `the machine could not plan: ${outcome.error}; ${estimate}`,
        ...NOTHING,
      };
    case 'answered':
      break;
  }
  const plan = outcome.plan;
  const [infos, files] = await Promise.all([
    closures.cachedPathInfos(o.workspaceId, plan.fetch),
    closures.fileSizes(o.workspaceId, plan.fetch),
  ]);
  const paths = plan.fetch.map((path) => ({
    path,
    narSize: infos.get(path)?.narSize ?? null,
    fileSize: files.get(path) ?? null,
  }));
  const narSize = paths.reduce((sum, p) => sum + (p.narSize ?? 0), 0);
  const fileSize = paths.reduce((sum, p) => sum + (p.fileSize ?? 0), 0);
  const diskOk = narSize * DISK_MARGIN <= plan.freeBytes;
  return {
    status: 'answered',
    message: diskOk ? 'answered' : 'not enough disk space on /nix/store for the download (with a 10% margin)',
    download: {
      paths,
      narSize,
      fileSize,
      unknownSizes: paths.filter((p) => p.narSize === null || p.fileSize === null).length,
    },
    unavailable: plan.build,
    truncated: plan.truncated,
    freeBytes: plan.freeBytes,
    diskOk,
    kind: plan.kind,
    dryActivate: plan.dryActivate,
  };
}
