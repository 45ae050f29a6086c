import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { RolloutPolicy } from '../../src/protocol/rollout-policy.ts';
import { decideRollout } from '../../src/server/rollouts/decide-rollout.ts';
import { operateRollout } from '../../src/server/rollouts/operate-rollout.ts';
import { type BatchPlan, type PlannedBatch, planBatches } from '../../src/server/rollouts/plan-batches.ts';
import type {
  AgentSnapshot,
  BatchGate,
  RolloutSnapshot,
  StoredPolicy,
} from '../../src/server/rollouts/rollout-snapshot.ts';

// Every expected value below is written by hand; nothing is computed with the code under test.

const MIN = 60_000;
const HOUR = 3_600_000;

function policy(plan: BatchGate[], over: Partial<StoredPolicy> = {}): StoredPolicy {
  return {
    canary: [],
    batches: [{ size: { percent: 100 }, advance: 'auto' }],
    maxParallel: 0,
    bake: 0,
    agentTimeout: HOUR,
    batchDeadline: HOUR,
    failureThreshold: { max: { count: 1 }, minSample: 1 },
    offline: 'defer',
    onFailure: 'halt',
    plan,
    ...over,
  };
}

const ALL: BatchGate[] = [{ label: '100%', advance: 'auto' }];

function rollout(p: StoredPolicy, over: Partial<RolloutSnapshot> = {}): RolloutSnapshot {
  return {
    id: 7,
    workspaceId: 1,
    state: 'running',
    batch: 0,
    promotedTo: -1,
    batchOpenedAt: 0,
    pausedAt: null,
    resumedAt: null,
    acceptedFailed: 0,
    acceptedDecided: 0,
    revertState: null,
    waiting: null,
    version: 1,
    policy: p,
    ...over,
  };
}

/** Agent `n<i>` with deployment and agent id i+1: not dispatched yet, online, unless `over` says. */
function agent(i: number, batch: number, over: Partial<AgentSnapshot> = {}): AgentSnapshot {
  return {
    deploymentId: i + 1,
    agentId: i + 1,
    agent: `n${i}`,
    batch,
    state: 'pending',
    reason: null,
    dispatchedAt: null,
    deferredAt: null,
    outcome: null,
    counted: true,
    startedAt: null,
    finishedAt: null,
    online: true,
    storePath: '/nix/store/new',
    previousPath: '/nix/store/old',
    reverted: false,
    ...over,
  };
}
const running = { dispatchedAt: 0, state: 'running', startedAt: 0 } as const;
const ok = {
  dispatchedAt: 0,
  state: 'succeeded',
  outcome: 'succeeded',
  startedAt: 0,
  finishedAt: 0,
} as const;
const bad = {
  dispatchedAt: 0,
  state: 'rolled-back',
  outcome: 'failed',
  startedAt: 0,
  finishedAt: 0,
} as const;

describe('decideRollout: the failure threshold', () => {
  const p = policy(ALL, { failureThreshold: { max: { percent: 25 }, minSample: 5 } });

  it('a share trips at exactly the share: 2 failed of 8 decided is 25%', () => {
    const agents = [0, 1].map((i) => agent(i, 0, bad)).concat([2, 3, 4, 5, 6, 7].map((i) => agent(i, 0, ok)));
    const d = decideRollout(rollout(p), agents, 1000);
    assert.equal(d.rollout.state, 'failed');
    assert.equal(d.rollout.reason, '2 of 8 decided agents failed (threshold: 25% once 5 are decided)');
  });

  it('a share under the threshold does not trip: 2 failed of 9 decided is 22%', () => {
    const agents = [0, 1]
      .map((i) => agent(i, 0, bad))
      .concat(
        [2, 3, 4, 5, 6, 7, 8].map((i) => agent(i, 0, ok)),
        [agent(9, 0, running)],
      );
    const d = decideRollout(rollout(p), agents, 1000);
    assert.equal(d.rollout.state, undefined);
    assert.equal(d.rollout.waiting, 'batch 1 of 1 (100%): 1 activating (n9)');
  });

  it('nothing trips before minSample agents are decided, even at 50% failed', () => {
    const agents = [0, 1]
      .map((i) => agent(i, 0, bad))
      .concat(
        [2, 3].map((i) => agent(i, 0, ok)),
        [4, 5, 6, 7].map((i) => agent(i, 0, running)),
      );
    assert.equal(decideRollout(rollout(p), agents, 1000).rollout.state, undefined);
  });

  it('minSample is capped by the targets: 2 of 3 decided trips with minSample 5', () => {
    const q = policy(ALL, { failureThreshold: { max: { count: 2 }, minSample: 5 } });
    const agents = [agent(0, 0, bad), agent(1, 0, bad), agent(2, 0, ok)];
    const d = decideRollout(rollout(q), agents, 1000);
    assert.equal(d.rollout.state, 'failed');
    assert.equal(d.rollout.reason, '2 of 3 decided agents failed (threshold: 2 once 3 are decided)');
    // With the third still activating, 2 of 3 targets are decided: too few.
    const early = decideRollout(rollout(q), [agent(0, 0, bad), agent(1, 0, bad), agent(2, 0, running)], 1000);
    assert.equal(early.rollout.state, undefined);
  });

  it('a deferred agent is not a target: 2 failed of 3 decided with a fourth deferred trips', () => {
    const q = policy(ALL, { failureThreshold: { max: { count: 2 }, minSample: 4 } });
    const agents = [
      agent(0, 0, bad),
      agent(1, 0, bad),
      agent(2, 0, ok),
      agent(3, 0, { deferredAt: 0, online: false }),
    ];
    const d = decideRollout(rollout(q), agents, 1000);
    assert.equal(d.rollout.state, 'failed');
    assert.equal(d.rollout.reason, '2 of 3 decided agents failed (threshold: 2 once 3 are decided)');
  });

  it('a failed deployment without a verdict yet gets one and counts at once', () => {
    const agents = [
      agent(0, 0, { dispatchedAt: 0, state: 'failed', reason: 'exit 1' }),
      agent(1, 0, running),
    ];
    const d = decideRollout(rollout(policy(ALL)), agents, 1000);
    assert.deepEqual(d.outcomes, [{ id: 1, outcome: 'failed' }]);
    assert.equal(d.rollout.state, 'failed');
    assert.equal(d.rollout.reason, '1 of 1 decided agents failed (threshold: 1 once 1 are decided)');
  });

  it('any failed canary trips at once, whatever the threshold, and names the canary', () => {
    const plan: BatchGate[] = [
      { label: 'canary', advance: 'auto' },
      { label: '100%', advance: 'auto' },
    ];
    const q = policy(plan, { failureThreshold: { max: { percent: 50 }, minSample: 10 } });
    const agents = [
      agent(0, 0, { ...bad, reason: 'switch-to-configuration exited with 1' }),
      agent(1, 0, ok),
      agent(2, 1),
    ];
    const d = decideRollout(rollout(q), agents, 1000);
    assert.equal(d.rollout.state, 'failed');
    assert.equal(d.rollout.reason, 'canary n0 failed: switch-to-configuration exited with 1');
    assert.deepEqual(d.dispatch, []);
    assert.deepEqual(d.cancel.ids, [3]);
    assert.equal(d.cancel.reason, 'rollout failed: canary n0 failed: switch-to-configuration exited with 1');
  });
});

describe('decideRollout: agentTimeout', () => {
  const p = policy(ALL, { agentTimeout: MIN, failureThreshold: { max: { count: 5 }, minSample: 5 } });
  const agents = [agent(0, 0, { dispatchedAt: 0, state: 'running', startedAt: 1000 }), agent(1, 0, running)];

  it('counts from the agent starting: not at exactly agentTimeout, timed-out just after', () => {
    const at = (now: number) => decideRollout(rollout(p), [agents[0]!], now).outcomes;
    assert.deepEqual(at(61_000), []);
    assert.deepEqual(at(61_001), [{ id: 1, outcome: 'timed-out' }]);
  });

  it('counts afresh from a resume', () => {
    const r = rollout(p, { resumedAt: 50_000 });
    assert.deepEqual(decideRollout(r, [agents[0]!], 61_001).outcomes, []);
    assert.deepEqual(decideRollout(r, [agents[0]!], 110_000).outcomes, []);
    assert.deepEqual(decideRollout(r, [agents[0]!], 110_001).outcomes, [{ id: 1, outcome: 'timed-out' }]);
  });

  it('does not run while paused', () => {
    const d = decideRollout(rollout(p, { state: 'paused', pausedAt: 2000 }), agents, 10 * HOUR);
    assert.deepEqual(d.outcomes, []);
    assert.equal(d.rollout.state, undefined);
    assert.equal(d.rollout.waiting, 'paused: nothing is dispatched and no deadline runs until resume');
  });
});

describe('decideRollout: agents offline when their batch opens', () => {
  const fresh = (offline: 'defer' | 'wait' | 'fail') =>
    rollout(policy(ALL, { offline, failureThreshold: { max: { count: 5 }, minSample: 5 } }), {
      state: 'pending',
      batch: -1,
      batchOpenedAt: null,
    });
  const both = [agent(0, 0), agent(1, 0, { online: false })];

  it('defer: the offline one is stored as deferred and not dispatched; the batch does not wait for it', () => {
    const r = fresh('defer');
    const d = decideRollout(r, both, 5000);
    assert.deepEqual(d.dispatch, [1]);
    assert.deepEqual(d.defer, [2]);
    assert.deepEqual(d.outcomes, []);
    assert.equal(d.rollout.state, 'running');
    assert.equal(d.rollout.batch, 0);
    assert.equal(d.rollout.batchOpenedAt, 5000);
    // Next step: n0 succeeded, n1 still away: the rollout succeeds and keeps n1's deployment.
    const later = decideRollout(
      { ...r, state: 'running', batch: 0, batchOpenedAt: 5000 },
      [agent(0, 0, ok), agent(1, 0, { online: false, deferredAt: 5000 })],
      6000,
    );
    assert.equal(later.rollout.state, 'succeeded');
    assert.equal(later.rollout.reason, null);
    assert.deepEqual(later.cancel.ids, []);
    assert.deepEqual(later.dispatch, []);
  });

  it('defer: an agent back after the rollout succeeded is dispatched outside the threshold', () => {
    const r = rollout(policy(ALL), { state: 'succeeded' });
    const d = decideRollout(r, [agent(0, 0, ok), agent(1, 0, { deferredAt: 5000 })], 9000);
    assert.deepEqual(d.dispatchUncounted, [2]);
    assert.deepEqual(d.dispatch, []);
  });

  it('defer: a rollout that fails cancels the deferred deployment', () => {
    const r = rollout(policy(ALL));
    const d = decideRollout(r, [agent(0, 0, bad), agent(1, 0, { online: false, deferredAt: 5000 })], 9000);
    assert.equal(d.rollout.state, 'failed');
    assert.deepEqual(d.cancel.ids, [2]);
    // And an agent back after that gets nothing.
    const after = decideRollout(
      { ...r, state: 'failed' },
      [agent(0, 0, bad), agent(1, 0, { deferredAt: 5000 })],
      10_000,
    );
    assert.deepEqual([after.dispatch, after.dispatchUncounted], [[], []]);
  });

  it('wait: the offline one is dispatched anyway and holds the batch until its deadline', () => {
    const d = decideRollout(fresh('wait'), both, 0);
    assert.deepEqual(d.dispatch, [1, 2]);
    assert.deepEqual(d.defer, []);
    const held = [agent(0, 0, ok), agent(1, 0, { online: false, dispatchedAt: 0 })];
    const r = rollout(policy(ALL, { offline: 'wait', batchDeadline: MIN }));
    const waiting = decideRollout(r, held, MIN);
    assert.equal(waiting.rollout.state, undefined);
    assert.equal(waiting.rollout.waiting, 'batch 1 of 1 (100%): 1 offline (offline: wait) (n1)');
    const late = decideRollout(r, held, MIN + 1);
    assert.equal(late.rollout.state, 'failed');
    assert.equal(late.rollout.reason, 'batch 1 (100%) not done within 60s: 1 offline (offline: wait) (n1)');
  });

  it('fail: the offline one is counted failed at once', () => {
    const d = decideRollout(fresh('fail'), both, 0);
    assert.deepEqual(d.dispatch, [1]);
    assert.deepEqual(d.outcomes, [{ id: 2, outcome: 'failed' }]);
    assert.deepEqual(d.defer, []);
  });
});

describe('decideRollout: maxParallel', () => {
  const p = policy(ALL, { maxParallel: 2, failureThreshold: { max: { count: 5 }, minSample: 5 } });
  it('dispatches at most maxParallel at once, and the next as one finishes', () => {
    const five = [0, 1, 2, 3, 4].map((i) => agent(i, 0));
    const d = decideRollout(rollout(p, { state: 'pending', batch: -1, batchOpenedAt: null }), five, 0);
    assert.deepEqual(d.dispatch, [1, 2]);
    const next = [agent(0, 0, ok), agent(1, 0, running), agent(2, 0), agent(3, 0), agent(4, 0)];
    const e = decideRollout(rollout(p), next, 1000);
    assert.deepEqual(e.dispatch, [3]);
    assert.equal(
      e.rollout.waiting,
      'batch 1 of 1 (100%): 1 activating (n1), 1 dispatched (n2), 2 queued (maxParallel) (n3, n4)',
    );
  });
});

describe('decideRollout and operateRollout: a manual gate and promote', () => {
  const two: BatchGate[] = [
    { label: '50%', advance: 'auto' },
    { label: '100%', advance: 'manual' },
  ];

  it('waits at the gate, saying how to promote; promote opens the next batch', () => {
    const r = rollout(policy(two));
    const agents = [agent(0, 0, ok), agent(1, 1)];
    const d = decideRollout(r, agents, 1000);
    assert.deepEqual(d.dispatch, []);
    assert.equal(d.rollout.state, undefined);
    assert.equal(
      d.rollout.waiting,
      'batch 2 of 2 (100%) waits for promote (manual gate): cairn deploy promote 7',
    );
    const op = operateRollout(r, agents, { op: 'promote', full: false }, 'admin', 2000);
    assert.deepEqual(op.rollout, { promotedTo: 1 });
    const opened = decideRollout({ ...r, promotedTo: 1 }, agents, 2000);
    assert.deepEqual(opened.dispatch, [2]);
    assert.equal(opened.rollout.batch, 1);
    assert.equal(opened.rollout.batchOpenedAt, 2000);
  });

  it('promote full opens every batch at once, even with the current one undecided', () => {
    const three: BatchGate[] = [
      { label: '10%', advance: 'auto' },
      { label: '50%', advance: 'manual' },
      { label: '100%', advance: 'manual' },
    ];
    const r = rollout(policy(three, { failureThreshold: { max: { count: 5 }, minSample: 5 } }));
    const agents = [agent(0, 0, running), agent(1, 1), agent(2, 2)];
    const op = operateRollout(r, agents, { op: 'promote', full: true }, 'admin', 1000);
    assert.deepEqual(op.rollout, { promotedTo: 2 });
    const d = decideRollout({ ...r, promotedTo: 2 }, agents, 1000);
    assert.deepEqual(d.dispatch, [2, 3]);
    assert.equal(d.rollout.batch, 2);
  });

  it('promote is refused while paused and with the last batch open', () => {
    const agents = [agent(0, 0, ok), agent(1, 1)];
    assert.throws(
      () =>
        operateRollout(
          rollout(policy(two), { state: 'paused' }),
          agents,
          { op: 'promote', full: false },
          'a',
          0,
        ),
      { code: 'CONFLICT', message: 'Cannot promote rollout 7: it is paused: resume it first' },
    );
    assert.throws(
      () => operateRollout(rollout(policy(two), { batch: 1 }), agents, { op: 'promote', full: true }, 'a', 0),
      { code: 'CONFLICT', message: 'Cannot promote rollout 7: it is running with its last batch open' },
    );
  });
});

describe('decideRollout and operateRollout: a pause shifts the batch deadline', () => {
  const p = policy(ALL, { batchDeadline: MIN, failureThreshold: { max: { count: 5 }, minSample: 5 } });
  const agents = [agent(0, 0, { dispatchedAt: 1000, state: 'running', startedAt: 2000 })];

  it('resume moves the batch opening by the time paused, and accepts the failures so far', () => {
    const paused = rollout(p, { state: 'paused', batchOpenedAt: 1000, pausedAt: 5000 });
    // Paused far beyond the deadline: nothing fails.
    assert.equal(decideRollout(paused, agents, 10 * HOUR).rollout.state, undefined);
    const withFailure = [...agents, agent(1, 0, bad)];
    const op = operateRollout(paused, withFailure, { op: 'resume' }, 'admin', 65_000);
    assert.deepEqual(op.rollout, {
      state: 'running',
      reason: null,
      waiting: null,
      resumedAt: 65_000,
      acceptedFailed: 1,
      acceptedDecided: 1,
      batchOpenedAt: 61_000,
    });
  });

  it('the shifted deadline fails the batch only once it has passed', () => {
    const resumed = rollout(p, { batchOpenedAt: 61_000, resumedAt: 65_000 });
    assert.equal(decideRollout(resumed, agents, 121_000).rollout.state, undefined);
    const d = decideRollout(resumed, agents, 121_001);
    assert.equal(d.rollout.state, 'failed');
    assert.equal(d.rollout.reason, 'batch 1 (100%) not done within 60s: 1 activating (n0)');
  });
});

describe('decideRollout: superseded', () => {
  const plan: BatchGate[] = [
    { label: '50%', advance: 'auto' },
    { label: '100%', advance: 'auto' },
  ];
  const taken = { state: 'cancelled', reason: 'superseded by a newer deployment' } as const;

  it('is superseded once a newer deployment took every agent it had yet to dispatch', () => {
    const d = decideRollout(
      rollout(policy(plan)),
      [agent(0, 0, running), agent(1, 1, taken), agent(2, 1, taken)],
      1000,
    );
    assert.equal(d.rollout.state, 'superseded');
    assert.equal(d.rollout.reason, 'superseded by a newer deployment to 2 of its agents');
  });

  it('is not superseded while an agent it has yet to dispatch is still its own', () => {
    const d = decideRollout(
      rollout(policy(plan)),
      [agent(0, 0, running), agent(1, 1, taken), agent(2, 1)],
      1000,
    );
    assert.notEqual(d.rollout.state, 'superseded');
  });
});

/** The batches of a plan that has no problems. */
function batchesOf(plan: BatchPlan): readonly PlannedBatch[] {
  assert.equal(plan.problems, undefined);
  return plan.batches!;
}

describe('planBatches', () => {
  // sha256 of each name, first hex digits (from `printf %s web-N | sha256sum`):
  // web-7 08b9…, web-5 0b73…, web-8 1549…, web-2 612f…, web-6 61b1…, web-4 9934…, web-3 9f11…,
  // web-1 c471…, web-9 c61c…, web-10 c8c6…
  const fleet = Array.from({ length: 10 }, (_, i) => ({
    id: i + 1,
    name: `web-${i + 1}`,
    tags: [] as string[],
  }));
  const sizes = (...b: Array<[number, 'auto' | 'manual']>): RolloutPolicy['batches'] =>
    b.map(([percent, advance]) => ({ size: { percent }, advance }));
  const base = policy(ALL);

  it('orders agents by the sha256 of their name and cuts at each cumulative size', () => {
    const plan = planBatches(fleet, { ...base, batches: sizes([20, 'auto'], [50, 'auto'], [100, 'auto']) });
    assert.deepEqual(batchesOf(plan), [
      { label: '20%', advance: 'auto', agentIds: [7, 5] },
      { label: '50%', advance: 'auto', agentIds: [8, 2, 6] },
      { label: '100%', advance: 'auto', agentIds: [4, 3, 1, 9, 10] },
    ]);
  });

  it('gives the same batches whatever order the agents come in', () => {
    const policy_ = { ...base, batches: sizes([20, 'auto'], [50, 'auto'], [100, 'auto']) };
    const a = planBatches(fleet, policy_);
    const b = planBatches([...fleet].reverse(), policy_);
    const c = planBatches([...fleet.slice(5), ...fleet.slice(0, 5)], policy_);
    assert.deepEqual(b, a);
    assert.deepEqual(c, a);
  });

  it('drops empty batches: 1% then 2% of 10 agents are both one agent', () => {
    const plan = planBatches(fleet, { ...base, batches: sizes([1, 'auto'], [2, 'auto'], [100, 'auto']) });
    assert.deepEqual(batchesOf(plan), [
      { label: '1%', advance: 'auto', agentIds: [7] },
      { label: '100%', advance: 'auto', agentIds: [5, 8, 2, 6, 4, 3, 1, 9, 10] },
    ]);
  });

  it('keeps the manual gate of a dropped batch on the next one', () => {
    const plan = planBatches(fleet, { ...base, batches: sizes([1, 'auto'], [2, 'manual'], [100, 'auto']) });
    assert.deepEqual(
      batchesOf(plan).map((b) => [b.label, b.advance, b.agentIds.length]),
      [
        ['1%', 'auto', 1],
        ['100%', 'manual', 9],
      ],
    );
  });

  it('puts the canaries first, by name or tag, and leaves them out of the rest', () => {
    const tagged = fleet.map((a) => (a.name === 'web-3' ? { ...a, tags: ['canary'] } : a));
    const plan = planBatches(tagged, {
      ...base,
      canary: ['tag:canary', 'web-9'],
      batches: sizes([50, 'auto'], [100, 'auto']),
    });
    assert.deepEqual(batchesOf(plan), [
      { label: 'canary', advance: 'auto', agentIds: [3, 9] },
      { label: '50%', advance: 'auto', agentIds: [7, 5, 8, 2] },
      { label: '100%', advance: 'auto', agentIds: [6, 4, 1, 10] },
    ]);
  });

  it('refuses a canary selector that matches none of the agents, naming its field', () => {
    const plan = planBatches(fleet, { ...base, canary: ['web-1', 'tag:canary'] });
    assert.deepEqual(plan.problems, [
      {
        field: 'rollout.canary.1',
        message:
          "no agent of this deployment has the tag 'canary' (add one with: cairn agent tag NAME canary)",
      },
    ]);
  });
});
