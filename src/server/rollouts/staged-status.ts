import type { StagedRollout } from '../../protocol/api-schemas.ts';
import { thresholdCounts } from './decide-rollout.ts';
import type { RolloutStore } from './rollout-store.ts';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/**
 * Where a staged rollout stands, as the API and the dashboard show it: its state, why it waits,
 * each batch and the threshold's counts. Null for a rollout that deploys at once.
 */
export async function stagedStatus(store: RolloutStore, rolloutId: number): Promise<StagedRollout | null> {
  const snap = await store.snapshot(rolloutId);
  if (!snap) return null;
  const row = (await store.row(rolloutId))!;
  const { rollout: r, agents } = snap;
  const { plan, ...policy } = r.policy;
  const counts = thresholdCounts(agents);
  return {
    state: r.state,
    reason: row.reason,
    waiting: row.waiting,
    batch: r.batch,
    batches: plan.map((b, index) => {
      const members = agents.filter((a) => a.batch === index);
      const decided = members.every(
        (a) =>
          a.outcome !== null || a.state === 'cancelled' || (a.dispatchedAt === null && a.deferredAt !== null),
      );
      return {
        index,
        label: b.label,
        advance: b.advance,
        agents: members.length,
        state: index > r.batch ? 'waiting' : decided ? 'done' : 'open',
        openedAt: index === r.batch ? iso(r.batchOpenedAt) : null,
      };
    }),
    decided: counts.decided,
    failed: counts.failed,
    deferred: agents.filter((a) => a.dispatchedAt === null && a.deferredAt !== null && a.state === 'pending')
      .length,
    policy,
    finishedAt: iso(row.finished_at === null ? null : Number(row.finished_at)),
  };
}
