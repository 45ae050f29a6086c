import type { Kysely, Selectable } from 'kysely';
import type { AgentsTable, Database } from '../db/database-schema.ts';
import type { DeploymentRow } from '../db/deployment-repository.ts';

/** One row of the fleet page: an agent, its newest deployment, the size of what it runs. */
export interface FleetRow {
  readonly agent: Selectable<AgentsTable>;
  readonly deployment: {
    readonly id: number;
    readonly state: string;
    readonly step: string | null;
    readonly storePath: string;
    readonly createdAt: number;
  } | null;
  /** NAR size of the closure of the store path the agent runs, when an agent reported it. */
  readonly closureSize: number | null;
  /** The agent's tags, sorted. */
  readonly tags: readonly string[];
}

/**
 * The queries behind the dashboard's pages, each one round trip whatever the fleet's size
 * (the fleet page of 1,000 agents is one query, not 1,001).
 */
export class DashboardQueries {
  constructor(private readonly db: Kysely<Database>) {}

  /** Every agent of the workspace with its newest deployment, closure size and tags, by name. */
  async fleet(workspaceId: number): Promise<FleetRow[]> {
    const rows = await this.db
      .selectFrom('agents')
      .leftJoin('deployments', (join) =>
        join.onRef('deployments.id', '=', (eb) =>
          eb
            .selectFrom('deployments as d2')
            .select((e) => e.fn.max('d2.id').as('id'))
            .whereRef('d2.agent_id', '=', 'agents.id'),
        ),
      )
      .selectAll('agents')
      .select([
        'deployments.id as d_id',
        'deployments.state as d_state',
        'deployments.step as d_step',
        'deployments.store_path as d_store_path',
        'deployments.created_at as d_created_at',
        // The size recorded for the agent's own deployment of what it runs: verified by the
        // caches, else as that agent reported it (never another agent's report).
        (eb) =>
          eb
            .selectFrom('deployments as d3')
            .select('d3.closure_nar_size')
            .whereRef('d3.agent_id', '=', 'agents.id')
            .whereRef('d3.store_path', '=', 'agents.store_path')
            .where('d3.closure_nar_size', 'is not', null)
            .orderBy('d3.id', 'desc')
            .limit(1)
            .as('closure_size'),
      ])
      .where('agents.workspace_id', '=', workspaceId)
      .orderBy('agents.name')
      .execute();
    const tags = new Map<number, string[]>();
    const tagRows = await this.db
      .selectFrom('agent_tags')
      .innerJoin('agents', 'agents.id', 'agent_tags.agent_id')
      .select(['agent_tags.agent_id', 'agent_tags.tag'])
      .where('agents.workspace_id', '=', workspaceId)
      .execute();
    for (const t of tagRows) tags.set(t.agent_id, [...(tags.get(t.agent_id) ?? []), t.tag]);
    return rows.map((r) => {
      const { d_id, d_state, d_step, d_store_path, d_created_at, closure_size, ...agent } = r;
      return {
        agent,
        deployment:
          d_id === null
            ? null
            : {
                id: d_id,
                state: d_state ?? '',
                step: d_step,
                storePath: d_store_path ?? '',
                createdAt: Number(d_created_at),
              },
        closureSize: closure_size === null ? null : Number(closure_size),
        tags: (tags.get(agent.id) ?? []).sort(),
      };
    });
  }

  /** The newest deployments of an agent, newest first. */
  async history(agentId: number, limit: number): Promise<DeploymentRow[]> {
    return await this.db
      .selectFrom('deployments')
      .innerJoin('agents', 'agents.id', 'deployments.agent_id')
      .selectAll('deployments')
      .select('agents.name as agent_name')
      .where('deployments.agent_id', '=', agentId)
      .orderBy('deployments.id', 'desc')
      .limit(limit)
      .execute();
  }

  /** The deployment an agent ran before `deploymentId`: its newest earlier succeeded one. */
  async previousSucceeded(agentId: number, deploymentId: number): Promise<DeploymentRow | undefined> {
    return await this.db
      .selectFrom('deployments')
      .innerJoin('agents', 'agents.id', 'deployments.agent_id')
      .selectAll('deployments')
      .select('agents.name as agent_name')
      .where('deployments.agent_id', '=', agentId)
      .where('deployments.id', '<', deploymentId)
      .where('deployments.state', '=', 'succeeded')
      .orderBy('deployments.id', 'desc')
      .limit(1)
      .executeTakeFirst();
  }

  /**
   * The rollout's creation time and creator; for a staged one also how far promote reaches, its
   * revert's progress, and the rollout that reverts it (or that it reverts).
   */
  async rollout(workspaceId: number, id: number): Promise<DashboardRollout | undefined> {
    const row = await this.db
      .selectFrom('rollouts')
      .select(['id', 'created_at', 'created_by', 'promoted_to', 'revert_state', 'reverts_rollout_id'])
      .where('workspace_id', '=', workspaceId)
      .where('id', '=', id)
      .executeTakeFirst();
    if (!row) return undefined;
    // Only a rollout aborted or failed with revert has one (and the column has no index).
    const revertedBy =
      row.revert_state === null
        ? undefined
        : await this.db
            .selectFrom('rollouts')
            .select('id')
            .where('workspace_id', '=', workspaceId)
            .where('reverts_rollout_id', '=', id)
            .executeTakeFirst();
    return { ...row, reverted_by: revertedBy?.id ?? null };
  }
}

/** A rollout as its page shows it. */
export interface DashboardRollout {
  readonly id: number;
  readonly created_at: number;
  readonly created_by: string;
  /** The last batch `promote` asked to open; -1 when none. */
  readonly promoted_to: number;
  readonly revert_state: string | null;
  readonly reverts_rollout_id: number | null;
  /** The rollout made to revert this one, if any. */
  readonly reverted_by: number | null;
}
