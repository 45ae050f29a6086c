import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { z } from 'zod';
import { machinePlanSchema } from '../../protocol/agent-protocol.ts';
import type { MachinePlanOutcome, PlanAsker, PlanQuestion } from '../closures/plan-rollout.ts';
import type { Database } from '../db/database-schema.ts';
import type { EventBus } from '../events/event-bus.ts';

/** What a replica answering for its machine adds to the question's time: the doorbells' way. */
const RELAY_MARGIN_MS = 3000;
/** Rows of askers that died before deleting them go after this long. */
const STALE_REQUEST_MS = 60 * 60_000;

const questionSchema = z.object({
  storePath: z.string(),
  rollbackScript: z.string().nullable(),
  dryActivate: z.boolean(),
  timeoutMs: z.number().int().positive(),
});

/** A {@link MachinePlanOutcome} as another replica of this server wrote it. */
const outcomeSchema = z.discriminatedUnion('status', [
  z.object({ status: z.literal('answered'), plan: machinePlanSchema }),
  z.object({ status: z.literal('not-here') }),
  z.object({ status: z.literal('unsupported'), protocol: z.number() }),
  z.object({ status: z.literal('timeout') }),
  z.object({ status: z.literal('failed'), error: z.string() }),
]);

/** What {@link ReplicaPlanAsker} needs. */
export interface ReplicaPlanDeps {
  /** Asks the agents held here. */
  readonly hub: PlanAsker & { holds(agentId: number): boolean };
  readonly db: Kysely<Database>;
  readonly bus: EventBus;
  readonly log: Logger;
  readonly now: () => number;
  /** Whether other replicas may hold agents (PostgreSQL). */
  readonly replicated: boolean;
}

/**
 * Asks the machines of a plan wherever their agents are connected. The hub asks the agents this
 * replica holds; with replicas sharing PostgreSQL, an agent held by another replica is asked
 * through a `plan_requests` row and the replicas' doorbells (`plan-asked`, `plan-answered`):
 * the replica holding it asks its machine and writes the answer. Without replicas, or when no
 * replica answers in time, the hub's `not-here` stands (the plan says so, with the estimate).
 */
export class ReplicaPlanAsker implements PlanAsker {
  readonly #d: ReplicaPlanDeps;
  readonly #unsubscribe: () => void;

  constructor(deps: ReplicaPlanDeps) {
    this.#d = deps;
    this.#unsubscribe = deps.replicated
      ? deps.bus.subscribe('plan-asked', ({ requestId, agentId }) => {
          if (!deps.hub.holds(agentId)) return;
          this.#answer(requestId, agentId).catch((err) =>
            deps.log.warn({ err, requestId }, 'cannot answer another replica’s plan request'),
          );
        })
      : () => {};
  }

  async askPlan(agentId: number, question: PlanQuestion): Promise<MachinePlanOutcome> {
    const here = await this.#d.hub.askPlan(agentId, question);
    if (here.status !== 'not-here' || !this.#d.replicated) return here;
    const { db, bus } = this.#d;
    const id = randomBytes(8).toString('hex');
    const now = this.#d.now();
    await db
      .deleteFrom('plan_requests')
      .where('created_at', '<', now - STALE_REQUEST_MS)
      .execute();
    await db
      .insertInto('plan_requests')
      .values({ id, agent_id: agentId, question: JSON.stringify(question), answer: null, created_at: now })
      .execute();
    try {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, question.timeoutMs + RELAY_MARGIN_MS);
        const off = bus.subscribe('plan-answered', (e) => {
          if (e.requestId === id) done();
        });
        function done() {
          clearTimeout(timer);
          off();
          resolve();
        }
        bus.publish('plan-asked', { requestId: id, agentId });
      });
      const row = await db
        .selectFrom('plan_requests')
        .select('answer')
        .where('id', '=', id)
        .executeTakeFirst();
      if (!row?.answer) return here;
      const parsed = outcomeSchema.safeParse(JSON.parse(row.answer));
      return parsed.success
        ? parsed.data
        : { status: 'failed', error: 'another replica’s answer was unreadable' };
    } finally {
      await db.deleteFrom('plan_requests').where('id', '=', id).execute();
    }
  }

  /** Asks the machine of an agent held here for another replica, and writes the answer. */
  async #answer(requestId: string, agentId: number): Promise<void> {
    const { db, bus } = this.#d;
    const row = await db
      .selectFrom('plan_requests')
      .selectAll()
      .where('id', '=', requestId)
      .executeTakeFirst();
    if (!row || row.answer !== null || row.agent_id !== agentId) return;
    const question = questionSchema.parse(JSON.parse(row.question));
    // The asker waits the question's time from when it asked: answer within it.
    const left = question.timeoutMs - (this.#d.now() - row.created_at);
    if (left < 1000) return;
    const outcome = await this.#d.hub.askPlan(agentId, { ...question, timeoutMs: left });
    if (outcome.status === 'not-here') return;
    const written = await db
      .updateTable('plan_requests')
      .set({ answer: JSON.stringify(outcome) })
      .where('id', '=', requestId)
      .where('answer', 'is', null)
      .executeTakeFirst();
    if (Number(written.numUpdatedRows) > 0) bus.publish('plan-answered', { requestId });
  }

  close(): void {
    this.#unsubscribe();
  }
}
