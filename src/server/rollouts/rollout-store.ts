import type { Kysely, Selectable } from 'kysely';
import type { RolloutState } from '../../protocol/rollout-policy.ts';
import type { Database, DeploymentsTable, RolloutsTable } from '../db/database-schema.ts';
import { IN_LIST_SIZE, inChunks } from '../db/in-chunks.ts';
import { enqueueWebhooks } from '../db/webhook-outbox.ts';
import type { Decision } from './decide-rollout.ts';
import type { AgentSnapshot, RolloutSnapshot, StoredPolicy } from './rollout-snapshot.ts';

/** The rollout states that have a webhook event. */
const ROLLOUT_WEBHOOK_STATES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'paused']);

/** The states in which the engine still has work on a rollout. */
const ACTIVE_STATES: readonly RolloutState[] = ['pending', 'running', 'paused'];

/** What applying a decision changed, for the engine to announce. */
export interface Applied {
  readonly dispatched: Array<Selectable<DeploymentsTable>>;
  readonly cancelled: Array<{ id: number; agentId: number }>;
  /** Rollback deployments made to revert agents the rollout switched. */
  readonly reverts: Array<Selectable<DeploymentsTable>>;
}

/** Reads staged rollouts for the engine and applies its decisions with compare-and-set. */
export class RolloutStore {
  constructor(private readonly db: Kysely<Database>) {}

  /** Staged rollouts the engine still has work on (running, paused, or reverting). */
  async active(): Promise<number[]> {
    const rows = await this.db
      .selectFrom('rollouts')
      .select('id')
      .where((eb) => eb.or([eb('state', 'in', [...ACTIVE_STATES]), eb('revert_state', '=', 'pending')]))
      .execute();
    return rows.map((r) => r.id);
  }

  async row(id: number): Promise<Selectable<RolloutsTable> | undefined> {
    return await this.db.selectFrom('rollouts').selectAll().where('id', '=', id).executeTakeFirst();
  }

  /** A staged rollout and its agents as the engine decides from them; undefined when not staged. */
  async snapshot(id: number): Promise<{ rollout: RolloutSnapshot; agents: AgentSnapshot[] } | undefined> {
    const r = await this.row(id);
    if (!r || r.policy === null || r.state === null) return undefined;
    const rows = await this.db
      .selectFrom('deployments')
      .innerJoin('agents', 'agents.id', 'deployments.agent_id')
      .select([
        'deployments.id',
        'deployments.agent_id',
        'agents.name',
        'agents.online',
        'deployments.batch',
        'deployments.state',
        'deployments.reason',
        'deployments.dispatched_at',
        'deployments.deferred_at',
        'deployments.outcome',
        'deployments.counted',
        'deployments.started_at',
        'deployments.finished_at',
        'deployments.store_path',
        'deployments.previous_path',
        'deployments.reverted',
      ])
      .where('deployments.rollout_id', '=', id)
      .orderBy('deployments.batch')
      .orderBy('deployments.id')
      .execute();
    return {
      rollout: toSnapshot(r),
      agents: rows.map((a) => ({
        deploymentId: a.id,
        agentId: a.agent_id,
        agent: a.name,
        batch: a.batch ?? 0,
        state: a.state,
        reason: a.reason,
        dispatchedAt: a.dispatched_at === null ? null : Number(a.dispatched_at),
        deferredAt: a.deferred_at === null ? null : Number(a.deferred_at),
        outcome: a.outcome,
        counted: a.counted === 1,
        startedAt: a.started_at === null ? null : Number(a.started_at),
        finishedAt: a.finished_at === null ? null : Number(a.finished_at),
        online: a.online === 1,
        storePath: a.store_path,
        previousPath: a.previous_path,
        reverted: a.reverted === 1,
      })),
    };
  }

  /**
   * Applies a decision in one transaction, only if the rollout is still at the version it was
   * made from: undefined when another decision got there first (it is then made again).
   */
  async apply(
    r: RolloutSnapshot,
    d: Decision,
    agents: readonly AgentSnapshot[],
    now: number,
  ): Promise<Applied | undefined> {
    return await this.db
      .transaction()
      .execute(async (trx) => {
        const set = d.rollout;
        const updated = await trx
          .updateTable('rollouts')
          .set((eb) => ({
            version: eb('version', '+', 1),
            ...(set.state !== undefined ? { state: set.state } : {}),
            ...(set.batch !== undefined ? { batch: set.batch } : {}),
            ...(set.batchOpenedAt !== undefined ? { batch_opened_at: set.batchOpenedAt } : {}),
            ...(set.waiting !== undefined ? { waiting: set.waiting } : {}),
            ...(set.reason !== undefined ? { reason: set.reason } : {}),
            ...(set.finishedAt !== undefined ? { finished_at: set.finishedAt } : {}),
            ...(set.revertState !== undefined ? { revert_state: set.revertState } : {}),
            ...(set.promotedTo !== undefined ? { promoted_to: set.promotedTo } : {}),
            ...(set.pausedAt !== undefined ? { paused_at: set.pausedAt } : {}),
            ...(set.resumedAt !== undefined ? { resumed_at: set.resumedAt } : {}),
            ...(set.acceptedFailed !== undefined ? { accepted_failed: set.acceptedFailed } : {}),
            ...(set.acceptedDecided !== undefined ? { accepted_decided: set.acceptedDecided } : {}),
          }))
          .where('id', '=', r.id)
          .where('version', '=', r.version)
          .executeTakeFirst();
        if (Number(updated.numUpdatedRows) === 0) throw STALE;
        // The rollout's new state and the webhooks telling of it are written together (the outbox).
        if (set.state !== undefined && set.state !== r.state && ROLLOUT_WEBHOOK_STATES.has(set.state)) {
          await enqueueWebhooks(trx, [
            {
              workspaceId: r.workspaceId,
              event: `rollout.${set.state as 'succeeded' | 'failed' | 'paused'}`,
              at: now,
              data: {
                rolloutId: r.id,
                state: set.state,
                reason: set.reason ?? null,
                path: `/rollouts/${r.id}`,
              },
            },
          ]);
        }
        const dispatched: Array<Selectable<DeploymentsTable>> = [];
        for (const [ids, counted] of [
          [d.dispatch, 1],
          [d.dispatchUncounted, 0],
        ] as const) {
          for (const part of inChunks(ids, IN_LIST_SIZE)) {
            dispatched.push(
              ...(await trx
                .updateTable('deployments')
                .set({ dispatched_at: now, counted })
                .where('id', 'in', part)
                .where('dispatched_at', 'is', null)
                .where('state', '=', 'pending')
                .returningAll()
                .execute()),
            );
          }
        }
        for (const part of inChunks(d.defer, IN_LIST_SIZE)) {
          await trx.updateTable('deployments').set({ deferred_at: now }).where('id', 'in', part).execute();
        }
        const byOutcome = new Map<string, number[]>();
        for (const o of d.outcomes) {
          const ids = byOutcome.get(o.outcome);
          if (ids) ids.push(o.id);
          else byOutcome.set(o.outcome, [o.id]);
        }
        for (const [outcome, ids] of byOutcome) {
          for (const part of inChunks(ids, IN_LIST_SIZE)) {
            await trx
              .updateTable('deployments')
              .set({ outcome })
              .where('id', 'in', part)
              .where('outcome', 'is', null)
              .execute();
          }
        }
        const cancelled: Array<{ id: number; agentId: number }> = [];
        for (const part of inChunks(d.cancel.ids, IN_LIST_SIZE)) {
          const rows = await trx
            .updateTable('deployments')
            .set((eb) => ({
              state: 'cancelled',
              reason: d.cancel.reason,
              finished_at: now,
              outcome: eb.fn.coalesce('outcome', eb.val('cancelled')),
            }))
            .where('id', 'in', part)
            .where('state', '=', 'pending')
            .returning(['id', 'agent_id'])
            .execute();
          cancelled.push(...rows.map((c) => ({ id: c.id, agentId: c.agent_id })));
        }
        const reverts = await this.#revert(trx, r, d, agents, now);
        return { dispatched, cancelled, reverts };
      })
      .catch((err) => {
        if (err === STALE) return undefined;
        throw err;
      });
  }

  /** Makes one rollout of rollback deployments for the agents to revert, dispatched at once. */
  async #revert(
    trx: Kysely<Database>,
    r: RolloutSnapshot,
    d: Decision,
    agents: readonly AgentSnapshot[],
    now: number,
  ): Promise<Array<Selectable<DeploymentsTable>>> {
    const wanted = new Set(d.revert);
    const targets = agents.filter((a) => wanted.has(a.deploymentId));
    if (targets.length === 0) return [];
    for (const part of inChunks(
      targets.map((a) => a.deploymentId),
      IN_LIST_SIZE,
    )) {
      await trx.updateTable('deployments').set({ reverted: 1 }).where('id', 'in', part).execute();
    }
    const back = targets.filter((a) => a.previousPath !== null && a.previousPath !== a.storePath);
    if (back.length === 0) return [];
    const source = await trx
      .selectFrom('deployments')
      .select(['id', 'rollback_script', 'exit4', 'health_checks', 'confirm_timeout'])
      .where('id', '=', back[0]!.deploymentId)
      .executeTakeFirstOrThrow();
    const rollout = await trx
      .insertInto('rollouts')
      .values({
        workspace_id: r.workspaceId,
        created_at: now,
        created_by: `revert of rollout ${r.id}`,
        reverts_rollout_id: r.id,
      })
      .returning('id')
      .executeTakeFirstOrThrow();
    const out: Array<Selectable<DeploymentsTable>> = [];
    for (const part of inChunks(back, 500)) {
      out.push(
        ...(await trx
          .insertInto('deployments')
          .values(
            part.map((a) => ({
              rollout_id: rollout.id,
              workspace_id: r.workspaceId,
              agent_id: a.agentId,
              store_path: a.previousPath!,
              rollback_script: source.rollback_script,
              exit4: source.exit4,
              health_checks: null,
              confirm_timeout: source.confirm_timeout,
              kind: 'rollback',
              state: 'pending',
              created_at: now,
              dispatched_at: now,
            })),
          )
          .returningAll()
          .execute()),
      );
    }
    return out;
  }

  /**
   * Deferred deployments of these agents whose rollout would now let it have them (running or
   * succeeded): dispatched outside the quota. Returns the rows dispatched.
   */
  async dispatchReturning(
    agentIds: readonly number[],
    now: number,
  ): Promise<Array<Selectable<DeploymentsTable>>> {
    const out: Array<Selectable<DeploymentsTable>> = [];
    for (const part of inChunks(agentIds, IN_LIST_SIZE)) {
      out.push(
        ...(await this.db
          .updateTable('deployments')
          .set({ dispatched_at: now, counted: 0 })
          .where('agent_id', 'in', part)
          .where('state', '=', 'pending')
          .where('dispatched_at', 'is', null)
          .where('deferred_at', 'is not', null)
          .where('rollout_id', 'in', (eb) =>
            eb.selectFrom('rollouts').select('id').where('state', 'in', ['running', 'succeeded']),
          )
          .returningAll()
          .execute()),
      );
    }
    return out;
  }
}

/** Thrown inside the transaction when the rollout moved on: rolls it back. */
const STALE = Symbol('stale rollout version');

export function toSnapshot(r: Selectable<RolloutsTable>): RolloutSnapshot {
  return {
    id: r.id,
    workspaceId: r.workspace_id,
    state: r.state as RolloutState,
    batch: r.batch,
    promotedTo: r.promoted_to,
    batchOpenedAt: r.batch_opened_at === null ? null : Number(r.batch_opened_at),
    pausedAt: r.paused_at === null ? null : Number(r.paused_at),
    resumedAt: r.resumed_at === null ? null : Number(r.resumed_at),
    acceptedFailed: r.accepted_failed,
    acceptedDecided: r.accepted_decided,
    revertState: r.revert_state,
    waiting: r.waiting,
    version: r.version,
    policy: JSON.parse(r.policy ?? '{}') as StoredPolicy,
  };
}
