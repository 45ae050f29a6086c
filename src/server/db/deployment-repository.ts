import { type Kysely, type Selectable, sql } from 'kysely';
import { type FinalState, OPEN_STATES, SUPERSEDED_REASON } from '../../protocol/deployment-state.ts';
import type { Database, DeploymentLogsTable, DeploymentsTable } from './database-schema.ts';
import { IN_LIST_SIZE, inChunks } from './in-chunks.ts';
import { anyEndpoint, enqueueWebhooks, inTransaction, type WebhookMessage } from './webhook-outbox.ts';
import type { WriteGroup } from './write-batch.ts';

/** A deployment row with its agent's name. */
export type DeploymentRow = Selectable<DeploymentsTable> & { agent_name: string };

/** Stores rollouts, deployments and their logs. */
export class DeploymentRepository {
  constructor(private readonly db: Kysely<Database>) {}

  #select() {
    return this.db
      .selectFrom('deployments')
      .innerJoin('agents', 'agents.id', 'deployments.agent_id')
      .selectAll('deployments')
      .select('agents.name as agent_name');
  }

  /**
   * Creates a rollout with one pending deployment per agent, in one transaction, and cancels the
   * agents' older deployments that have not started: the newest deployment wins. Returns the
   * new rollout's id and the ids of the cancelled deployments by agent.
   */
  async createRollout(input: {
    workspaceId: number;
    createdBy: string;
    now: number;
    /** A staged rollout's stored policy (JSON) and batch count: its deployments wait for their batch. */
    staged?: { policy: string; batchCount: number };
    /** The rollout this one reverts. */
    revertsRolloutId?: number;
    deployments: ReadonlyArray<{
      batch?: number | undefined;
      previousPath?: string | null;
      agentId: number;
      storePath: string;
      rollbackScript: string | null;
      exit4: string;
      healthChecks: string | null;
      confirmTimeout: number;
      kind: 'deploy' | 'rollback';
    }>;
  }): Promise<{
    rolloutId: number;
    created: Array<Selectable<DeploymentsTable>>;
    cancelled: Array<{ id: number; agentId: number; rolloutId: number }>;
  }> {
    return await this.db.transaction().execute(async (trx) => {
      const rollout = await trx
        .insertInto('rollouts')
        .values({
          workspace_id: input.workspaceId,
          created_at: input.now,
          created_by: input.createdBy,
          policy: input.staged?.policy ?? null,
          state: input.staged ? 'pending' : null,
          batch_count: input.staged?.batchCount ?? 0,
          reverts_rollout_id: input.revertsRolloutId ?? null,
        })
        .returning('id')
        .executeTakeFirstOrThrow();
      const cancelled: Array<{ id: number; agent_id: number; rollout_id: number }> = [];
      for (const agentIds of inChunks(
        input.deployments.map((d) => d.agentId),
        IN_LIST_SIZE,
      )) {
        cancelled.push(
          ...(await trx
            .updateTable('deployments')
            .set({ state: 'cancelled', reason: SUPERSEDED_REASON, finished_at: input.now })
            .where('agent_id', 'in', agentIds)
            .where('state', '=', 'pending')
            .returning(['id', 'agent_id', 'rollout_id'])
            .execute()),
        );
      }
      // Fourteen values a row: 500 rows stay far below either database's limit on bound values.
      const created: Array<Selectable<DeploymentsTable>> = [];
      for (const part of inChunks(input.deployments, 500)) {
        const rows = await trx
          .insertInto('deployments')
          .values(
            part.map((d) => ({
              rollout_id: rollout.id,
              workspace_id: input.workspaceId,
              agent_id: d.agentId,
              store_path: d.storePath,
              rollback_script: d.rollbackScript,
              exit4: d.exit4,
              health_checks: d.healthChecks,
              confirm_timeout: d.confirmTimeout,
              kind: d.kind,
              state: 'pending',
              created_at: input.now,
              batch: d.batch ?? null,
              previous_path: d.previousPath ?? null,
              // A staged rollout's engine lets each agent see its deployment when its batch opens.
              dispatched_at: input.staged ? null : input.now,
            })),
          )
          .returningAll()
          .execute();
        created.push(...rows);
      }
      return {
        rolloutId: rollout.id,
        created,
        cancelled: cancelled.map((c) => ({ id: c.id, agentId: c.agent_id, rolloutId: c.rollout_id })),
      };
    });
  }

  async byId(workspaceId: number, id: number): Promise<DeploymentRow | undefined> {
    return await this.#select()
      .where('deployments.workspace_id', '=', workspaceId)
      .where('deployments.id', '=', id)
      .executeTakeFirst();
  }

  /** Deployments by id, any workspace (another replica named them); a thousand per query. */
  async byIds(ids: readonly number[]): Promise<DeploymentRow[]> {
    const out: DeploymentRow[] = [];
    for (const part of inChunks([...new Set(ids)], IN_LIST_SIZE))
      out.push(...(await this.#select().where('deployments.id', 'in', part).execute()));
    return out;
  }

  async byRollout(workspaceId: number, rolloutId: number): Promise<DeploymentRow[]> {
    return await this.#select()
      .where('deployments.workspace_id', '=', workspaceId)
      .where('deployments.rollout_id', '=', rolloutId)
      .orderBy('agents.name')
      .execute();
  }

  async rolloutExists(workspaceId: number, rolloutId: number): Promise<boolean> {
    const row = await this.db
      .selectFrom('rollouts')
      .select('id')
      .where('workspace_id', '=', workspaceId)
      .where('id', '=', rolloutId)
      .executeTakeFirst();
    return row !== undefined;
  }

  /** The most recent deployments, newest first, optionally of one agent. */
  async list(workspaceId: number, options: { agentId?: number; limit: number }): Promise<DeploymentRow[]> {
    let q = this.#select().where('deployments.workspace_id', '=', workspaceId);
    if (options.agentId !== undefined) q = q.where('deployments.agent_id', '=', options.agentId);
    return await q.orderBy('deployments.id', 'desc').limit(options.limit).execute();
  }

  /** The deployments these agents are running now, by agent (one query per thousand agents). */
  async runningOf(agentIds: readonly number[]): Promise<Map<number, Selectable<DeploymentsTable>>> {
    const out = new Map<number, Selectable<DeploymentsTable>>();
    for (const part of inChunks(agentIds, IN_LIST_SIZE)) {
      const rows = await this.db
        .selectFrom('deployments')
        .selectAll()
        .where('agent_id', 'in', part)
        .where('state', '=', 'running')
        .execute();
      for (const r of rows) out.set(r.agent_id, r);
    }
    return out;
  }

  /**
   * What each agent should run: its running deployment if it has one (it must finish first),
   * else its newest pending one. One query per thousand agents (every agent that reported a
   * result in the same moment, say); agents with nothing to run are absent.
   */
  async desiredForMany(agentIds: readonly number[]): Promise<Map<number, Selectable<DeploymentsTable>>> {
    const out = new Map<number, Selectable<DeploymentsTable>>();
    for (const part of inChunks([...new Set(agentIds)], IN_LIST_SIZE)) {
      const rows = await this.db
        .selectFrom('deployments')
        .selectAll()
        .where('agent_id', 'in', part)
        .where('state', 'in', [...OPEN_STATES])
        // A staged rollout's deployment stays hidden from its agent until its batch opens.
        .where('dispatched_at', 'is not', null)
        // An enrolled agent waiting for approval is told nothing to run until it is approved.
        .where((eb) =>
          eb.not(
            eb.exists(
              eb
                .selectFrom('agents')
                .select('agents.id')
                .whereRef('agents.id', '=', 'deployments.agent_id')
                .where('agents.pending_since', 'is not', null),
            ),
          ),
        )
        .orderBy('id', 'desc')
        .execute();
      for (const r of rows) {
        const seen = out.get(r.agent_id);
        if (!seen || (r.state === 'running' && seen.state !== 'running')) out.set(r.agent_id, r);
      }
    }
    return out;
  }

  /**
   * Records the step an agent is at, marking a pending deployment running (one statement);
   * false when the deployment is neither pending nor running (cancelled, or already final).
   */
  async start(id: number, agentId: number, step: string, now: number): Promise<boolean> {
    const r = await this.db
      .updateTable('deployments')
      .set((eb) => ({
        state: 'running',
        step,
        started_at: eb.fn.coalesce('started_at', eb.val(now)),
      }))
      .where('id', '=', id)
      .where('agent_id', '=', agentId)
      .where('state', 'in', [...OPEN_STATES])
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * {@link start} for many steps in one statement (an `UPDATE … FROM (VALUES …)`, which SQLite
   * and PostgreSQL both take): true for each step whose deployment was open and the agent's.
   * Of two steps of one deployment, the later one is recorded, started at the earlier one.
   */
  async startMany(
    steps: ReadonlyArray<{ id: number; agentId: number; step: string; at: number }>,
  ): Promise<boolean[]> {
    if (steps.length === 1) {
      const s = steps[0]!;
      return [await this.start(s.id, s.agentId, s.step, s.at)];
    }
    // One row per deployment: its last step, started at its first step's time.
    const last = new Map<number, (typeof steps)[number]>();
    for (const s of steps) {
      const before = last.get(s.id);
      last.set(s.id, before ? { ...s, at: Math.min(before.at, s.at) } : s);
    }
    const values = sql.join(
      [...last.values()].map(
        (s) =>
          sql`(cast(${s.id} as integer), cast(${s.agentId} as integer), cast(${s.step} as text), cast(${s.at} as bigint))`,
      ),
    );
    const open = sql.join([...OPEN_STATES]);
    const { rows } = await sql<{ id: number }>`
      update deployments set state = 'running', step = v.column3,
        started_at = coalesce(deployments.started_at, v.column4)
      from (values ${values}) as v
      where deployments.id = v.column1 and deployments.agent_id = v.column2
        and deployments.state in (${open})
      returning deployments.id`.execute(this.db);
    const started = new Set(rows.map((r) => Number(r.id)));
    return steps.map((s) => started.has(s.id));
  }

  /** Records a final state once; false when the deployment was already final or is not the agent's. */
  async finish(
    id: number,
    agentId: number,
    result: { state: FinalState; step: string | null; reason: string | null; rebootRequired: boolean },
    now: number,
  ): Promise<boolean> {
    const r = await this.db
      .updateTable('deployments')
      .set({
        state: result.state,
        step: result.step,
        reason: result.reason,
        finished_at: now,
        reboot_required: result.rebootRequired ? 1 : 0,
      })
      .where('id', '=', id)
      .where('agent_id', '=', agentId)
      .where('state', 'in', [...OPEN_STATES])
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  /**
   * {@link finish} for many results in one statement: of two results for one deployment, the
   * first queued counts (the deployment is over after it). Returns whether each changed it.
   */
  async finishMany(items: ReadonlyArray<FinishWrite>): Promise<boolean[]> {
    if (items.length === 1) {
      const f = items[0]!;
      return [await this.finish(f.id, f.agentId, f.result, f.at)];
    }
    const first = new Map<string, FinishWrite>();
    for (const f of items) {
      const key = `${f.id}/${f.agentId}`;
      if (!first.has(key)) first.set(key, f);
    }
    const values = sql.join(
      [...first.values()].map(
        (f) =>
          sql`(cast(${f.id} as integer), cast(${f.agentId} as integer), cast(${f.result.state} as text),
            cast(${f.result.step} as text), cast(${f.result.reason} as text), cast(${f.at} as bigint),
            cast(${f.result.rebootRequired ? 1 : 0} as integer))`,
      ),
    );
    const open = sql.join([...OPEN_STATES]);
    const { rows } = await sql<{ id: number; agent_id: number }>`
      update deployments set state = v.column3, step = v.column4, reason = v.column5,
        finished_at = v.column6, reboot_required = v.column7
      from (values ${values}) as v
      where deployments.id = v.column1 and deployments.agent_id = v.column2
        and deployments.state in (${open})
      returning deployments.id, deployments.agent_id`.execute(this.db);
    const changed = new Set(rows.map((r) => `${r.id}/${r.agent_id}`));
    return items.map((f) => first.get(`${f.id}/${f.agentId}`) === f && changed.has(`${f.id}/${f.agentId}`));
  }

  /**
   * The store path to roll an agent back to: that of the deployment `toId` when given, else of its
   * last succeeded deployment before the newest succeeded one (what it ran before).
   */
  async rollbackTarget(
    agentId: number,
    toId?: number,
  ): Promise<{ store_path: string; id: number } | undefined> {
    if (toId !== undefined) {
      return await this.db
        .selectFrom('deployments')
        .select(['store_path', 'id'])
        .where('agent_id', '=', agentId)
        .where('id', '=', toId)
        .executeTakeFirst();
    }
    const rows = await this.db
      .selectFrom('deployments')
      .select(['store_path', 'id'])
      .where('agent_id', '=', agentId)
      .where('state', '=', 'succeeded')
      .orderBy('id', 'desc')
      .limit(50)
      .execute();
    const current = rows[0];
    return rows.find((r) => r.store_path !== current?.store_path);
  }

  /**
   * The first `limit` lines of each of these deployments (one query), for replaying a rollout.
   * Deployments without lines are absent.
   */
  async logsOf(
    deploymentIds: readonly number[],
    limit = 10_000,
  ): Promise<Map<number, DeploymentLogsTable[]>> {
    const out = new Map<number, DeploymentLogsTable[]>();
    if (deploymentIds.length === 0) return out;
    const rows = await this.db
      .selectFrom('deployment_logs')
      .selectAll()
      .where('deployment_id', 'in', [...deploymentIds])
      .where('seq', '<=', limit)
      .orderBy('deployment_id')
      .orderBy('seq')
      .execute();
    for (const r of rows) {
      const list = out.get(r.deployment_id);
      if (list) list.push(r);
      else out.set(r.deployment_id, [r]);
    }
    return out;
  }

  async logs(deploymentId: number, afterSeq = 0, limit = 10_000): Promise<DeploymentLogsTable[]> {
    return await this.db
      .selectFrom('deployment_logs')
      .selectAll()
      .where('deployment_id', '=', deploymentId)
      .where('seq', '>', afterSeq)
      .orderBy('seq')
      .limit(limit)
      .execute();
  }
}

/** A step of a deployment, with what a `deployment.started` webhook says about it. */
export interface StepWrite {
  readonly id: number;
  readonly agentId: number;
  readonly step: string;
  readonly at: number;
  readonly workspaceId: number;
  readonly rolloutId: number;
  readonly agent: string;
}

/**
 * Steps of deployments, written together when several are queued in a row (handle-progress).
 * The first step of a pending deployment starts it: its `deployment.started` webhooks are
 * written in the same transaction (the write batch's).
 */
export const STEP_WRITES: WriteGroup<StepWrite, boolean> = {
  runMany: (db, items) =>
    inTransaction(db, async (trx) => {
      // Where nobody listens, a step is what it was before webhooks: one UPDATE for the group.
      if (
        !(await anyEndpoint(
          trx,
          items.map((i) => i.workspaceId),
        ))
      )
        return await new DeploymentRepository(trx).startMany(items);
      const pending = new Set<number>();
      for (const part of inChunks([...new Set(items.map((i) => i.id))], IN_LIST_SIZE)) {
        const rows = await trx
          .selectFrom('deployments')
          .select('id')
          .where('id', 'in', part)
          .where('state', '=', 'pending')
          .execute();
        for (const r of rows) pending.add(r.id);
      }
      const started = await new DeploymentRepository(trx).startMany(items);
      const messages: WebhookMessage[] = [];
      for (const [i, item] of items.entries()) {
        if (!started[i] || !pending.delete(item.id)) continue;
        messages.push({
          workspaceId: item.workspaceId,
          event: 'deployment.started',
          at: item.at,
          data: deploymentWebhookData(item, 'running', null),
        });
      }
      if (messages.length > 0) await enqueueWebhooks(trx, messages);
      return started;
    }),
  keysOf: (s) => [`deployment:${s.id}`],
};

/** An agent's result for one of its deployments, as the write batch queues it, with what its webhooks say. */
export interface FinishWrite {
  readonly id: number;
  readonly agentId: number;
  readonly result: { state: FinalState; step: string | null; reason: string | null; rebootRequired: boolean };
  readonly at: number;
  readonly workspaceId: number;
  readonly rolloutId: number;
  readonly agent: string;
}

/**
 * Results of deployments (each resolving to whether it changed the deployment), written together,
 * in the same transaction as the webhooks telling of them (the outbox): the results in one
 * statement, their outbox rows in one more. A round trip per verdict's outbox row would double
 * what ten thousand verdicts cost on PostgreSQL (bench/webhooks.ts).
 */
export const FINISH_WRITES: WriteGroup<FinishWrite, boolean> = {
  runMany: (db, items) =>
    inTransaction(db, async (trx) => {
      const done = await new DeploymentRepository(trx).finishMany(items);
      const messages = items.flatMap((v, i) => (done[i] ? verdictWebhooks(v) : []));
      if (messages.length > 0) await enqueueWebhooks(trx, messages);
      return done;
    }),
  keysOf: (f) => [`deployment:${f.id}`],
};

/** The webhooks of a verdict: its state (none for a cancellation), and a reboot needed. */
function verdictWebhooks(v: FinishWrite): WebhookMessage[] {
  const data = deploymentWebhookData(v, v.result.state, v.result.reason);
  const out: WebhookMessage[] = [];
  if (v.result.state !== 'cancelled')
    out.push({ workspaceId: v.workspaceId, event: `deployment.${v.result.state}`, at: v.at, data });
  if (v.result.rebootRequired)
    out.push({ workspaceId: v.workspaceId, event: 'agent.reboot-required', at: v.at, data });
  return out;
}

/** The `data` of a deployment's webhooks. */
export function deploymentWebhookData(
  d: { id: number; rolloutId: number; agent: string },
  state: string,
  reason: string | null,
): WebhookMessage['data'] {
  return {
    deploymentId: d.id,
    rolloutId: d.rolloutId,
    agent: d.agent,
    state,
    reason,
    path: `/deployments/${d.id}`,
  };
}
