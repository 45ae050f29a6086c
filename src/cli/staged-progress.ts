import type { DeploymentInfo, StagedRollout } from '../protocol/api-schemas.ts';
import { isFinalRolloutState } from '../protocol/rollout-policy.ts';
import { batchName, plural, stateLine } from './describe-rollout.ts';

/**
 * Turns the successive statuses of a staged rollout into the lines `deploy activate` prints:
 * one when a batch opens, one when it is done, one when the reason it waits changes, and one
 * when its state changes (paused, running again, or over, with the reason). Statuses that
 * change nothing people care about print nothing.
 */
export class StagedProgress {
  readonly #id: number;
  #last: StagedRollout | undefined;
  /** Each deployment's batch and latest state, to tell what a finished batch did. */
  readonly #deployments = new Map<number, { batch: number | null; state: string }>();

  constructor(id: number, deployments: readonly DeploymentInfo[]) {
    this.#id = id;
    for (const d of deployments) this.#deployments.set(d.id, { batch: d.batch ?? null, state: d.state });
  }

  /** True once the rollout is over (succeeded, failed, aborted or superseded). */
  get final(): boolean {
    return this.#last !== undefined && isFinalRolloutState(this.#last.state);
  }

  /** The latest status seen. */
  get last(): StagedRollout | undefined {
    return this.#last;
  }

  /** Records a deployment's new state (from the `state` events). */
  noteDeployment(id: number, state: string): void {
    const d = this.#deployments.get(id);
    if (d) d.state = state;
  }

  /** The lines that tell what changed since the last status, in order. */
  update(s: StagedRollout): string[] {
    const prev = this.#last;
    this.#last = s;
    const lines: string[] = [];
    if (prev?.state !== s.state && (prev !== undefined || (s.state !== 'pending' && s.state !== 'running'))) {
      // Over, paused or running again; the first pending/running needs no line of its own.
      if (!isFinalRolloutState(s.state)) lines.push(stateLine(this.#id, s));
    }
    for (const b of s.batches) {
      const was = prev?.batches[b.index]?.state ?? 'waiting';
      if (was === 'waiting' && b.state !== 'waiting') {
        lines.push(`${batchName(s, b.index)} opened: ${plural(b.agents, 'agent')}`);
      }
      if (was !== 'done' && b.state === 'done') {
        lines.push(`${batchName(s, b.index)} done: ${this.#tally(b.index)}`);
      }
    }
    if (s.waiting && s.waiting !== prev?.waiting && !isFinalRolloutState(s.state)) {
      lines.push(`waiting: ${s.waiting}`);
    }
    if (isFinalRolloutState(s.state) && prev?.state !== s.state) lines.push(stateLine(this.#id, s));
    return lines;
  }

  /** What a batch's agents ended in: `2 succeeded, 1 deferred (offline)`. */
  #tally(batch: number): string {
    const counts = new Map<string, number>();
    for (const d of this.#deployments.values()) {
      if (d.batch !== batch) continue;
      // A deployment still pending in a batch that is done was held back: its agent is offline.
      const what = d.state === 'pending' ? 'deferred (offline)' : d.state;
      counts.set(what, (counts.get(what) ?? 0) + 1);
    }
    if (counts.size === 0) return 'no agents';
    return [...counts].map(([what, n]) => `${n} ${what}`).join(', ');
  }
}
