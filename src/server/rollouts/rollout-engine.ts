import { type Kysely, type Selectable, sql } from 'kysely';
import type { Logger } from 'pino';
import type { Database, DeploymentsTable } from '../db/database-schema.ts';
import type { DeploymentRepository } from '../db/deployment-repository.ts';
import type { SqlDialect } from '../db/migrations.ts';
import type { EventBus } from '../events/event-bus.ts';
import type { ServerMetrics } from '../metrics/server-metrics.ts';
import { type Decision, decideRollout } from './decide-rollout.ts';
import { operateRollout, type RolloutOperation } from './operate-rollout.ts';
import type { AgentSnapshot, RolloutSnapshot } from './rollout-snapshot.ts';
import { type Applied, RolloutStore } from './rollout-store.ts';

/** How often the engine re-decides every active rollout (bake ends, deadlines, lost events). */
export const ROLLOUT_TICK_MS = 1000;

/** The longest a kicked step waits after the rollout's previous step (see `kick`). */
const MAX_STEP_SPACING_MS = 1000;

/** The advisory lock replicas sharing PostgreSQL take for one tick ("cairn", then 1). */
export const ROLLOUT_TICK_LOCK = 0x636169726e01;

/** What the engine needs. */
export interface RolloutEngineDeps {
  readonly db: Kysely<Database>;
  readonly deployments: Pick<DeploymentRepository, 'runningOf'>;
  readonly bus: EventBus;
  readonly log: Logger;
  readonly now: () => number;
  readonly tickMs?: number;
  /**
   * Agents that were online when the previous server stopped: for {@link RECONNECT_GRACE_MS}
   * they count as online though not reconnected yet, so that a restart does not defer (or fail,
   * with `offline: fail`) the batch it opens.
   */
  readonly reconnecting?: readonly number[];
  /** On PostgreSQL, each tick is claimed by one replica at a time; SQLite has one process. */
  readonly dialect?: SqlDialect;
  /** Counts the agents a failed rollout reverts (`cairn_rollbacks_total{reason="rollout-revert"}`). */
  readonly metrics?: Pick<ServerMetrics, 'rollbacksCreated'> | undefined;
}

/** How long agents connected to a server that stopped have to reconnect (their backoff is at most 30 s). */
export const RECONNECT_GRACE_MS = 60_000;

/**
 * Runs staged rollouts. Keeps no state that matters in memory: every step reads the rollout
 * from the database, decides with {@link decideRollout} and applies the decision with
 * compare-and-set, on a tick and whenever one of its agents reports. A restarted server (or
 * another replica) carries on from the rows.
 */
export class RolloutEngine {
  readonly #deps: RolloutEngineDeps;
  /** Where staged rollouts are read and their decisions applied. */
  readonly store: RolloutStore;
  /** Rollouts known to be active: a cache that only decides which events wake the engine. */
  readonly #active = new Set<number>();
  /** Rollouts being decided now, and those to decide again when that is done. */
  readonly #busy = new Set<number>();
  readonly #again = new Set<number>();
  readonly #soon = new Set<number>();
  /** When each rollout may next be stepped by a kick, and the timers waiting for that. */
  readonly #nextStepAt = new Map<number, number>();
  readonly #spaced = new Map<number, NodeJS.Timeout>();
  #soonTimer: NodeJS.Immediate | undefined;
  /** Agents that came online since the last look for their deferred deployments. */
  readonly #online = new Set<number>();
  #onlineTimer: NodeJS.Immediate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;
  #closed = false;
  readonly #unsubscribe: Array<() => void>;
  /** Agents presumed online until `#graceUntil`: see {@link RolloutEngineDeps.reconnecting}. */
  readonly #reconnecting: ReadonlySet<number>;
  readonly #graceUntil: number;

  constructor(deps: RolloutEngineDeps) {
    this.#deps = deps;
    this.#reconnecting = new Set(deps.reconnecting ?? []);
    this.#graceUntil = deps.now() + RECONNECT_GRACE_MS;
    this.store = new RolloutStore(deps.db);
    this.#unsubscribe = [
      // Only verdicts move a rollout on; steps of a running deployment do not.
      deps.bus.subscribe('deployment', (e) => {
        if (e.state !== 'running' && e.state !== 'pending' && this.#active.has(e.rolloutId))
          this.kick(e.rolloutId);
      }),
      deps.bus.subscribe('agent-online', ({ agentId }) => this.#agentOnline(agentId)),
    ];
  }

  /** Starts the tick; the first one runs at once (a restarted server picks its rollouts up). */
  start(): void {
    const tick = () => {
      void this.tick().finally(() => {
        if (!this.#closed) this.#timer = setTimeout(tick, this.#deps.tickMs ?? ROLLOUT_TICK_MS).unref();
      });
    };
    tick();
  }

  /** Decides every active rollout once. */
  async tick(): Promise<void> {
    if (this.#ticking || this.#closed) return;
    this.#ticking = true;
    try {
      const ids = await this.store.active();
      this.#active.clear();
      for (const id of ids) this.#active.add(id);
      if (ids.length > 0)
        await this.#claimed(async () => {
          for (const id of ids) await this.step(id);
        });
    } catch (err) {
      this.#deps.log.error({ err }, 'rollout engine tick failed');
    } finally {
      this.#ticking = false;
    }
  }

  /**
   * Runs `work` unless another replica is running its tick: a transaction-scoped advisory lock,
   * held until `work` ends, never a long-lived leader. Decisions are applied with compare-and-set
   * anyway; the claim saves the replicas from deciding the same rollouts at once.
   */
  async #claimed(work: () => Promise<void>): Promise<void> {
    if (this.#deps.dialect !== 'postgres') return work();
    await this.#deps.db.transaction().execute(async (trx) => {
      const { rows } = await sql<{ won: boolean }>`
        select pg_try_advisory_xact_lock(${ROLLOUT_TICK_LOCK}::bigint) as won`.execute(trx);
      if (rows[0]?.won) await work();
    });
  }

  /** Decides a rollout soon (events of one turn of the event loop are decided once). */
  kick(rolloutId: number): void {
    this.#active.add(rolloutId);
    // Results arrive all through a batch and each kicks: steps of one rollout are spaced by
    // twice what the last one cost (at most a second), so that reading a 10,000-agent rollout
    // again and again cannot take the CPU the agents' results and confirmations need.
    const wait = (this.#nextStepAt.get(rolloutId) ?? 0) - performance.now();
    if (wait > 0) {
      if (!this.#spaced.has(rolloutId)) {
        this.#spaced.set(
          rolloutId,
          setTimeout(() => {
            this.#spaced.delete(rolloutId);
            this.kick(rolloutId);
          }, Math.ceil(wait)),
        );
      }
      return;
    }
    this.#soon.add(rolloutId);
    this.#soonTimer ??= setImmediate(() => {
      this.#soonTimer = undefined;
      const ids = [...this.#soon];
      this.#soon.clear();
      for (const id of ids)
        void this.step(id).catch((err) => this.#deps.log.error({ err, rollout: id }, 'rollout step failed'));
    });
  }

  /** Decides one rollout and applies the decision; one step per rollout at a time. */
  async step(id: number): Promise<void> {
    if (this.#closed) return;
    if (this.#busy.has(id)) {
      this.#again.add(id);
      return;
    }
    this.#busy.add(id);
    const began = performance.now();
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        const snap = await this.store.snapshot(id);
        if (!snap) return;
        const now = this.#deps.now();
        const agents =
          now < this.#graceUntil && this.#reconnecting.size > 0
            ? snap.agents.map((a) => (this.#reconnecting.has(a.agentId) ? { ...a, online: true } : a))
            : snap.agents;
        const d = decideRollout(snap.rollout, agents, now);
        if (isEmpty(d, snap.rollout)) break;
        const applied = await this.store.apply(snap.rollout, d, snap.agents, now);
        if (!applied) continue; // another decision got there first: decide again from the new rows
        await this.#announce(snap.rollout, snap.agents, d, applied);
        // One pass decides verdicts, batches and dispatches together; only a revert, decided when
        // the rollout fails, needs another at once. Events and the tick bring the rest (reading a
        // 10,000-agent rollout again after every step doubled the engine's reads).
        if (d.rollout.revertState !== 'pending') break;
      }
    } finally {
      this.#busy.delete(id);
      const cost = performance.now() - began;
      this.#nextStepAt.set(id, performance.now() + Math.min(MAX_STEP_SPACING_MS, 2 * cost));
      if (this.#again.delete(id)) this.kick(id);
    }
  }

  /**
   * Pauses, resumes, promotes or aborts a staged rollout (CONFLICT when its state does not allow
   * it); false when the rollout does not exist in the workspace or is not staged.
   */
  async operate(workspaceId: number, id: number, o: RolloutOperation, by: string): Promise<boolean> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const snap = await this.store.snapshot(id);
      if (!snap || snap.rollout.workspaceId !== workspaceId) return false;
      const now = this.#deps.now();
      const d = operateRollout(snap.rollout, snap.agents, o, by, now);
      const applied = await this.store.apply(snap.rollout, d, snap.agents, now);
      if (!applied) continue;
      await this.#announce(snap.rollout, snap.agents, d, applied);
      // Decide the rest before answering, as activation does: the answer to a promote shows the
      // batch it opened, not the gate it passed.
      await this.step(id).catch((err) => this.#deps.log.error({ err, rollout: id }, 'rollout step failed'));
      return true;
    }
    throw new Error(`rollout ${id} kept changing while it was being ${o.op}d`);
  }

  #agentOnline(agentId: number): void {
    // Agents coming online in the same turn (a fleet reconnecting) are looked up together: one
    // statement for all of them rather than a commit each.
    this.#online.add(agentId);
    this.#onlineTimer ??= setImmediate(() => {
      this.#onlineTimer = undefined;
      const ids = [...this.#online];
      this.#online.clear();
      void this.#dispatchReturning(ids);
    });
  }

  async #dispatchReturning(agentIds: readonly number[]): Promise<void> {
    try {
      const rows = await this.store.dispatchReturning(agentIds, this.#deps.now());
      await this.#tell(rows);
      for (const r of rows) this.kick(r.rollout_id);
    } catch (err) {
      this.#deps.log.error({ err, agents: agentIds.length }, 'cannot dispatch deferred deployments');
    }
  }

  /** Tells agents what changed for them, and followers that the rollout changed. */
  async #announce(
    r: RolloutSnapshot,
    agents: readonly AgentSnapshot[],
    d: Decision,
    applied: Applied,
  ): Promise<void> {
    const { bus } = this.#deps;
    const names = new Map(agents.map((a) => [a.deploymentId, a.agent]));
    for (const c of applied.cancelled) {
      bus.publish('deployment', {
        workspaceId: r.workspaceId,
        rolloutId: r.id,
        deploymentId: c.id,
        agent: names.get(c.id) ?? '',
        state: 'cancelled',
        step: null,
        reason: d.cancel.reason,
      });
    }
    this.#deps.metrics?.rollbacksCreated('rollout-revert', applied.reverts.length);
    await this.#tell([...applied.dispatched, ...applied.reverts]);
    bus.publish('rollout', { workspaceId: r.workspaceId, rolloutId: r.id });
    if (d.rollout.state !== undefined && d.rollout.state !== r.state) {
      this.#deps.log.info(
        { rollout: r.id, state: d.rollout.state, reason: d.rollout.reason ?? undefined },
        `rollout ${d.rollout.state}`,
      );
    }
  }

  /** Tells each agent its desired deployment: one still running comes first. */
  async #tell(rows: ReadonlyArray<Selectable<DeploymentsTable>>): Promise<void> {
    if (rows.length === 0) return;
    const running = await this.#deps.deployments.runningOf(rows.map((d) => d.agent_id));
    for (const row of rows) {
      this.#deps.bus.publish('desired', {
        agentId: row.agent_id,
        deployment: running.get(row.agent_id) ?? row,
      });
    }
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#soonTimer) clearImmediate(this.#soonTimer);
    if (this.#onlineTimer) clearImmediate(this.#onlineTimer);
    for (const t of this.#spaced.values()) clearTimeout(t);
    for (const u of this.#unsubscribe) u();
  }
}

/** True when a decision changes nothing the rollout does not already hold. */
function isEmpty(d: Decision, r: RolloutSnapshot): boolean {
  if (
    d.dispatch.length +
      d.dispatchUncounted.length +
      d.defer.length +
      d.outcomes.length +
      d.cancel.ids.length +
      d.revert.length >
    0
  ) {
    return false;
  }
  const current: Record<string, unknown> = {
    state: r.state,
    batch: r.batch,
    batchOpenedAt: r.batchOpenedAt,
    waiting: r.waiting,
    revertState: r.revertState,
  };
  return Object.entries(d.rollout).every(([k, v]) => k in current && current[k] === v);
}
