import { createHash } from 'node:crypto';
import { type Amount, formatAmount, type RolloutPolicy } from '../../protocol/rollout-policy.ts';

/** An agent a staged rollout targets. */
export interface PlanAgent {
  readonly id: number;
  readonly name: string;
  readonly tags: readonly string[];
}

/** One batch as planned: its label, gate and agents. */
export interface PlannedBatch {
  readonly label: string;
  readonly advance: 'auto' | 'manual';
  readonly agentIds: readonly number[];
}

/** The batches, or the problems with the policy's selectors (each naming its field). */
export type BatchPlan =
  | { readonly batches: readonly PlannedBatch[]; readonly problems?: undefined }
  | { readonly problems: ReadonlyArray<{ field: string; message: string }> };

/**
 * The order agents outside the canaries are taken in: by a hash of the name, so that the first
 * 10% is the same machines on every rollout (and not always the alphabetically first ones).
 */
export function rolloutOrderKey(name: string): string {
  return createHash('sha256').update(name).digest('hex');
}

/** How many of `total` agents a cumulative amount covers: a share rounds up, so 1% of 10 is 1. */
function covered(a: Amount, total: number): number {
  return 'percent' in a ? Math.ceil((a.percent * total) / 100 - 1e-9) : Math.min(a.count, total);
}

/**
 * Splits a rollout's agents into batches: the canaries (named, or selected by `tag:`) first as
 * their own batch, then the rest in a stable order cut at each cumulative size. Empty batches
 * (1% of 10 agents after 1% already took one) are dropped, keeping a manual gate on the next one.
 * A canary entry that selects none of the rollout's agents is a problem: a misspelt tag would
 * otherwise skip the canary stage silently.
 */
export function planBatches(agents: readonly PlanAgent[], policy: RolloutPolicy): BatchPlan {
  const problems: Array<{ field: string; message: string }> = [];
  const canaries = new Set<number>();
  policy.canary.forEach((selector, i) => {
    const tag = selector.startsWith('tag:') ? selector.slice(4) : undefined;
    const hits = agents.filter((a) => (tag === undefined ? a.name === selector : a.tags.includes(tag)));
    if (hits.length === 0) {
      problems.push({
        field: `rollout.canary.${i}`,
        message:
          tag === undefined
            ? `'${selector}' is not an agent of this deployment`
            : `no agent of this deployment has the tag '${tag}' (add one with: cairn agent tag NAME ${tag})`,
      });
    }
    for (const a of hits) canaries.add(a.id);
  });
  if (problems.length > 0) return { problems };
  const batches: PlannedBatch[] = [];
  const canaryList = agents.filter((a) => canaries.has(a.id));
  if (canaryList.length > 0) {
    batches.push({ label: 'canary', advance: 'auto', agentIds: canaryList.map((a) => a.id) });
  }
  const rest = agents
    .filter((a) => !canaries.has(a.id))
    .map((a) => ({ a, key: rolloutOrderKey(a.name) }))
    .sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0))
    .map((x) => x.a);
  let taken = 0;
  let gate: 'auto' | 'manual' = 'auto';
  for (const b of policy.batches) {
    const upTo = Math.max(taken, covered(b.size, rest.length));
    if (b.advance === 'manual') gate = 'manual';
    if (upTo === taken) continue;
    batches.push({
      label: formatAmount(b.size),
      advance: gate,
      agentIds: rest.slice(taken, upTo).map((a) => a.id),
    });
    taken = upTo;
    gate = 'auto';
  }
  return { batches };
}
