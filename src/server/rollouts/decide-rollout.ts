import { SUPERSEDED_REASON } from '../../protocol/deployment-state.ts';
import { formatAmount, type RolloutState } from '../../protocol/rollout-policy.ts';
import type { AgentSnapshot, RolloutSnapshot } from './rollout-snapshot.ts';

/** What the engine changes in one step; empty lists and no `rollout` mean nothing to do. */
export interface Decision {
  /** New values of the rollout's columns (absent: unchanged). */
  rollout: {
    state?: RolloutState;
    batch?: number;
    batchOpenedAt?: number;
    waiting?: string | null;
    reason?: string | null;
    finishedAt?: number;
    revertState?: 'pending' | 'done';
    promotedTo?: number;
    pausedAt?: number;
    resumedAt?: number;
    acceptedFailed?: number;
    acceptedDecided?: number;
  };
  /** Deployments to let their agents see; `uncounted`: a deferred agent that came back. */
  dispatch: number[];
  dispatchUncounted: number[];
  defer: number[];
  outcomes: Array<{ id: number; outcome: 'succeeded' | 'failed' | 'timed-out' | 'cancelled' }>;
  /** Deployments never dispatched that will not be: cancelled with this reason. */
  cancel: { ids: number[]; reason: string };
  /** Deployments whose agents switched and must go back to what they ran before. */
  revert: number[];
}

const FAILED = new Set(['failed', 'timed-out']);

/**
 * The staged-rollout engine: a pure function from a rollout's row, its agents' rows and the
 * clock to what changes next. Called on a tick and on every agent event; the caller applies the
 * result with compare-and-set on the rollout's version, so a restarted server or a second
 * replica reaches the same decisions.
 */
export function decideRollout(r: RolloutSnapshot, agents: readonly AgentSnapshot[], now: number): Decision {
  const d: Decision = {
    rollout: {},
    dispatch: [],
    dispatchUncounted: [],
    defer: [],
    outcomes: [],
    cancel: { ids: [], reason: '' },
    revert: [],
  };
  const p = r.policy;
  const final =
    r.state === 'succeeded' || r.state === 'failed' || r.state === 'aborted' || r.state === 'superseded';
  const paused = r.state === 'paused';
  // 1. Verdicts on agents, from their deployments' states and the clock.
  const outcome = new Map<number, string | null>(agents.map((a) => [a.deploymentId, a.outcome]));
  const baking: AgentSnapshot[] = [];
  for (const a of agents) {
    if (a.outcome !== null) continue;
    let o: Decision['outcomes'][number]['outcome'] | undefined;
    if (a.state === 'failed' || a.state === 'rolled-back') o = 'failed';
    else if (a.state === 'cancelled') o = 'cancelled';
    else if (a.state === 'succeeded') {
      if (p.bake === 0 || (a.online && now >= (a.finishedAt ?? now) + p.bake)) o = 'succeeded';
      else baking.push(a);
    } else if (a.state === 'running' && !paused && !final && a.startedAt !== null) {
      // Counted from the agent's acknowledgement, and afresh after a resume: a pause trips nothing.
      const since = Math.max(a.startedAt, r.resumedAt ?? 0);
      if (now - since > p.agentTimeout) o = 'timed-out';
    }
    if (o !== undefined) {
      d.outcomes.push({ id: a.deploymentId, outcome: o });
      outcome.set(a.deploymentId, o);
    }
  }
  const out = (a: AgentSnapshot) => outcome.get(a.deploymentId) ?? null;
  const undispatched = (a: AgentSnapshot) => a.dispatchedAt === null && a.state === 'pending';

  // Superseded: a newer deployment took every agent this rollout had yet to dispatch (step 3;
  // a paused rollout too, or a resume would find nothing left and call it succeeded).
  const superseded = agents.filter(
    (a) => a.state === 'cancelled' && a.reason === SUPERSEDED_REASON && a.outcome === null,
  );
  const supersededAll =
    superseded.length > 0 && !agents.some((a) => undispatched(a) && a.deferredAt === null);

  // 2. A rollout that failed with `revert` rolls back every agent it switched, including those
  // still activating when it failed, once they finish.
  if (final || (paused && !supersededAll)) {
    if (r.revertState === 'pending') {
      for (const a of agents) {
        if (a.state === 'succeeded' && !a.reverted && a.dispatchedAt !== null) d.revert.push(a.deploymentId);
      }
      const inFlight = agents.some(
        (a) => a.dispatchedAt !== null && (a.state === 'pending' || a.state === 'running'),
      );
      if (!inFlight) d.rollout.revertState = 'done';
    }
    // Deferred agents that come back get the closure of a rollout that succeeded.
    if (r.state === 'succeeded') {
      for (const a of agents)
        if (undispatched(a) && a.deferredAt !== null && a.online) d.dispatchUncounted.push(a.deploymentId);
    }
    if (paused) d.rollout.waiting = 'paused: nothing is dispatched and no deadline runs until resume';
    return d;
  }

  // 3. Superseded: a newer deployment took every agent this rollout had yet to dispatch.
  if (supersededAll) {
    return end(
      d,
      agents,
      now,
      'superseded',
      `superseded by a newer deployment to ${superseded.length} of its agents`,
      false,
    );
  }

  // 4. The failure threshold, over the agents it counts.
  const counted = agents.filter(
    (a) => a.counted && out(a) !== 'cancelled' && !(undispatched(a) && a.deferredAt !== null),
  );
  const decided = counted.filter((a) => out(a) !== null).length - r.acceptedDecided;
  const failed = counted.filter((a) => FAILED.has(out(a) ?? '')).length - r.acceptedFailed;
  const sample = Math.min(p.failureThreshold.minSample, Math.max(1, counted.length - r.acceptedDecided));
  const max = p.failureThreshold.max;
  const canaryFailed =
    p.plan[0]?.label === 'canary' ? agents.find((a) => a.batch === 0 && FAILED.has(out(a) ?? '')) : undefined;
  let trip: string | undefined;
  if (canaryFailed && failed > 0) {
    trip = `canary ${canaryFailed.agent} ${out(canaryFailed) === 'timed-out' ? 'timed out' : 'failed'}${canaryFailed.reason ? `: ${canaryFailed.reason}` : ''}`;
  } else if (failed > 0 && decided >= sample) {
    const over = 'count' in max ? failed >= max.count : failed * 100 >= max.percent * decided;
    if (over)
      trip = `${failed} of ${decided} decided agents failed (threshold: ${formatAmount(max)} once ${sample} are decided)`;
  }
  if (trip !== undefined) {
    if (p.onFailure === 'pause') {
      d.rollout = {
        state: 'paused',
        reason: `paused: ${trip}`,
        waiting: 'paused after failures: resume to go on (the failures so far are then accepted), or abort',
      };
      return d;
    }
    return end(d, agents, now, 'failed', trip, p.onFailure === 'revert');
  }

  // 5. Batches: open the next when the current is done (and its gate allows), dispatch within
  // maxParallel, fail a batch that outlives its deadline.
  const deferNow = new Set<number>();
  let batch = r.batch;
  let openedAt = r.batchOpenedAt ?? now;
  const last = p.plan.length - 1;
  const isDone = (upTo: number) =>
    agents.every(
      (a) =>
        a.batch > upTo ||
        !a.counted ||
        out(a) !== null ||
        a.state === 'cancelled' ||
        (undispatched(a) && a.deferredAt !== null) ||
        deferNow.has(a.deploymentId),
    );
  for (;;) {
    if (batch >= 0 && !isDone(batch) && r.promotedTo <= batch) break;
    if (batch >= last) {
      if (isDone(batch)) {
        d.defer = [...deferNow];
        return end(d, agents, now, 'succeeded', null, false);
      }
      break;
    }
    const next = batch + 1;
    if (p.plan[next]!.advance === 'manual' && r.promotedTo < next) {
      d.rollout.waiting = `batch ${next + 1} of ${p.plan.length} (${p.plan[next]!.label}) waits for promote (manual gate): cairn deploy promote ${r.id}`;
      if (batch !== r.batch) Object.assign(d.rollout, { batch, batchOpenedAt: openedAt });
      if (r.state === 'pending' && batch >= 0) d.rollout.state = 'running';
      d.defer = [...deferNow];
      return d;
    }
    batch = next;
    openedAt = now;
    for (const a of agents) {
      if (a.batch !== batch || !undispatched(a)) continue;
      if (!a.online && p.offline === 'defer') deferNow.add(a.deploymentId);
      else if (!a.online && p.offline === 'fail') {
        d.outcomes.push({ id: a.deploymentId, outcome: 'failed' });
        outcome.set(a.deploymentId, 'failed');
      }
    }
  }
  if (batch !== r.batch)
    Object.assign(d.rollout, { batch, batchOpenedAt: openedAt, state: 'running' as const });
  else if (r.state === 'pending') d.rollout.state = 'running';
  // Dispatch what the open batches may run now.
  const inFlight = agents.filter(
    (a) => a.batch <= batch && a.dispatchedAt !== null && a.counted && out(a) === null,
  ).length;
  let free = p.maxParallel === 0 ? Number.POSITIVE_INFINITY : p.maxParallel - inFlight;
  for (const a of agents) {
    if (free <= 0) break;
    if (a.batch > batch || !undispatched(a) || deferNow.has(a.deploymentId) || out(a) !== null) continue;
    if (a.deferredAt !== null) {
      // Back from being offline: it gets the closure, outside the quota and the threshold.
      if (a.online) d.dispatchUncounted.push(a.deploymentId);
      continue;
    }
    if (!a.online && p.offline === 'defer') {
      deferNow.add(a.deploymentId);
      continue;
    }
    d.dispatch.push(a.deploymentId);
    free--;
  }
  // Agents found offline are deferred for good: a later step must not wait for them again.
  d.defer = [...deferNow];
  if (now - openedAt > p.batchDeadline && !isDone(batch)) {
    const label = p.plan[batch]!.label;
    return end(
      d,
      agents,
      now,
      'failed',
      `batch ${batch + 1} (${label}) not done within ${Math.round(p.batchDeadline / 1000)}s: ${waitingFor(agents, out, batch)}`,
      p.onFailure === 'revert',
    );
  }
  // Told with this decision's dispatches and deferrals applied: an agent dispatched just now is
  // not "queued", one deferred just now not waited for.
  const changing = { dispatching: new Set([...d.dispatch, ...d.dispatchUncounted]), deferring: deferNow };
  d.rollout.waiting = `batch ${batch + 1} of ${p.plan.length} (${p.plan[batch]!.label}): ${waitingFor(agents, out, batch, baking, p.bake, changing)}`;
  return d;
}

/**
 * What the failure threshold counts: its targets (neither cancelled nor deferred nor back from
 * being deferred), how many of them are decided, and how many failed or timed out.
 */
export function thresholdCounts(
  agents: readonly AgentSnapshot[],
  out: (a: AgentSnapshot) => string | null = (a) => a.outcome,
): { targets: number; decided: number; failed: number } {
  let targets = 0;
  let decided = 0;
  let failed = 0;
  for (const a of agents) {
    const o = out(a);
    if (!a.counted || o === 'cancelled' || (a.dispatchedAt === null && a.deferredAt !== null)) continue;
    if (a.state === 'cancelled' && o === null) continue;
    targets++;
    if (o !== null) decided++;
    if (o !== null && FAILED.has(o)) failed++;
  }
  return { targets, decided, failed };
}

/** Ends the rollout: no more dispatches; agents never dispatched are cancelled. */
function end(
  d: Decision,
  agents: readonly AgentSnapshot[],
  now: number,
  state: RolloutState,
  reason: string | null,
  revert: boolean,
): Decision {
  d.dispatch = [];
  d.rollout = { ...d.rollout, state, reason, waiting: null, finishedAt: now };
  if (revert) d.rollout.revertState = 'pending';
  // A rollout that succeeded keeps its deferred agents: they get the closure when they return.
  const deferred = new Set(d.defer);
  if (state !== 'succeeded') d.defer = [];
  d.cancel = {
    ids: agents
      .filter((a) => a.dispatchedAt === null && a.state === 'pending')
      .filter((a) => state !== 'succeeded' || (a.deferredAt === null && !deferred.has(a.deploymentId)))
      .map((a) => a.deploymentId),
    reason:
      state === 'succeeded'
        ? 'offline when its batch opened (offline: fail)'
        : `rollout ${state}${reason ? `: ${reason}` : ''}`,
  };
  return d;
}

/** Who the open batches wait for, briefly: `2 activating (web-3, web-4), 1 baking`. */
function waitingFor(
  agents: readonly AgentSnapshot[],
  out: (a: AgentSnapshot) => string | null,
  batch: number,
  baking: readonly AgentSnapshot[] = [],
  bakeMs = 0,
  changing: { dispatching: ReadonlySet<number>; deferring: ReadonlySet<number> } = {
    dispatching: new Set(),
    deferring: new Set(),
  },
): string {
  const groups = new Map<string, string[]>();
  // Pushed, not copied: a copy per agent is quadratic in the batch (10,000 agents, 50 M copies).
  const add = (what: string, name: string) => {
    const names = groups.get(what);
    if (names) names.push(name);
    else groups.set(what, [name]);
  };
  const bakingNow = new Set(baking);
  for (const a of agents) {
    if (a.batch > batch || out(a) !== null || !a.counted || a.state === 'cancelled') continue;
    const dispatched = a.dispatchedAt !== null || changing.dispatching.has(a.deploymentId);
    if (!dispatched)
      add(
        a.deferredAt === null && !changing.deferring.has(a.deploymentId)
          ? 'queued (maxParallel)'
          : 'deferred (offline)',
        a.agent,
      );
    else if (bakingNow.has(a))
      add(a.online ? `baking (${Math.round(bakeMs / 1000)}s)` : 'offline while baking', a.agent);
    else if (a.state === 'pending') add(a.online ? 'dispatched' : 'offline (offline: wait)', a.agent);
    else add('activating', a.agent);
  }
  if (groups.size === 0) return 'every agent decided';
  return [...groups]
    .map(
      ([what, names]) =>
        `${names.length} ${what} (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''})`,
    )
    .join(', ');
}
