import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nixosPackage, profileTarget } from '../helpers/deploy-fixtures.ts';
import { type DeployTestbed, useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { adminApi } from '../helpers/server.ts';
import { until } from '../helpers/staged-rollout.ts';

interface Deployment {
  id: number;
  agent: string;
  kind: string;
  state: string;
  reason: string | null;
  rolloutId: number;
  storePath: string;
  rolloutState?: string | null;
  batch?: number | null;
}
interface Rollout {
  deployments: Deployment[];
  staged: {
    state: string;
    reason: string | null;
    waiting: string | null;
    decided: number;
    failed: number;
    batches: Array<{ label: string; agents: number; state: string }>;
  } | null;
}

/**
 * The batches a 20%/50%/100% rollout of ten agents without canaries makes, worked out here
 * independently of the server: agents ordered by the sha256 of their name (hex), 2 + 3 + 5.
 */
function batchesOf(names: readonly string[]): [string[], string[], string[]] {
  const key = (n: string) => createHash('sha256').update(n).digest('hex');
  const order = [...names].sort((a, b) => (key(a) < key(b) ? -1 : 1));
  return [order.slice(0, 2), order.slice(2, 5), order.slice(5)];
}

const readOr = async (file: string) => await readFile(file, 'utf8').catch(() => '');

/**
 * Ten agents on v1 (deployed at once), then a staged v2 in batches 20%/50%/100% with
 * failureThreshold {max: 2, minSample: 4}; two agents of the second batch get a closure whose
 * switch exits 1. Each agent's v2 records its switches in its own file, so "never got v2" is
 * checked per agent.
 */
async function thresholdRollout(bed: DeployTestbed, prefix: string, onFailure: 'halt' | 'revert') {
  const names = Array.from({ length: 10 }, (_, i) => `${prefix}${i}`);
  const [b1, b2, b3] = batchesOf(names);
  const failing = b2.slice(0, 2);
  const record = (n: string) => join(bed.world.profiles, `record-${n}`);
  const pkg = (n: string) => `${prefix}-v2-${n}-${RUN_TAG}`;
  const paths = await bed.world.publish([
    nixosPackage(`${prefix}-v1-${RUN_TAG}`, join(bed.world.profiles, 'record-v1')),
    nixosPackage(`${prefix}-bad-${RUN_TAG}`, join(bed.world.profiles, 'record-bad'), { exit: 1 }),
    ...names.map((n) => nixosPackage(pkg(n), record(n))),
  ]);
  const v1 = paths.get(`${prefix}-v1-${RUN_TAG}`)!;
  const bad = paths.get(`${prefix}-bad-${RUN_TAG}`)!;
  const v2 = (n: string) => paths.get(pkg(n))!;
  for (const n of names) await bed.agent(n);
  const first = await bed.activate({ agents: Object.fromEntries(names.map((n) => [n, v1])) });
  assert.equal(first.code, 0, first.stdout + first.stderr);

  const r = await bed.activate({
    agents: Object.fromEntries(names.map((n) => [n, failing.includes(n) ? bad : v2(n)])),
    rollout: {
      batches: ['20%', '50%', '100%'],
      bake: '0',
      failureThreshold: { max: 2, minSample: 4 },
      onFailure,
    },
  });
  const list = (await adminApi(bed.server, 'GET', `/deployments?agent=${b3[0]}&limit=5`)) as {
    deployments: Deployment[];
  };
  const rolloutId = list.deployments[0]!.rolloutId;
  const rollout = (await adminApi(bed.server, 'GET', `/rollouts/${rolloutId}`)) as unknown as Rollout;
  return { names, b1, b2, b3, failing, record, v1, v2, r, rolloutId, rollout };
}

describe('a staged rollout whose failure threshold is met (onFailure: halt)', () => {
  const bed = useDeployTestbed();

  it('halts in the second batch once 2 of at least 4 decided agents failed; the third batch is never dispatched, exit 1', async () => {
    const { b1, b2, b3, failing, record, v1, v2, r, rollout, rolloutId } = await thresholdRollout(
      bed,
      'th',
      'halt',
    );
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const staged = rollout.staged!;
    assert.equal(staged.state, 'failed');
    assert.match(
      staged.reason ?? '',
      /^2 of [45] decided agents failed \(threshold: 2 once 4 are decided\)$/,
    );
    assert.equal(staged.waiting, null);
    assert.equal(staged.failed, 2);
    assert.deepEqual(
      staged.batches.map((b) => [b.label, b.agents]),
      [
        ['20%', 2],
        ['50%', 3],
        ['100%', 5],
      ],
    );
    assert.equal(staged.batches[2]!.state, 'waiting');
    const by = new Map(rollout.deployments.map((d) => [d.agent, d]));
    // The server put each agent in the batch worked out above.
    for (const [i, batch] of [b1, b2, b3].entries())
      for (const n of batch) assert.equal(by.get(n)!.batch, i, n);
    // The first batch switched to v2; the two bad closures failed and went back to v1.
    for (const n of b1) {
      assert.deepEqual([by.get(n)!.state, by.get(n)!.rolloutState], ['succeeded', 'succeeded'], n);
      assert.equal(await profileTarget(join(bed.world.profiles, n)), v2(n), n);
    }
    for (const n of failing) {
      assert.deepEqual([by.get(n)!.state, by.get(n)!.rolloutState], ['rolled-back', 'failed'], n);
      assert.equal(await profileTarget(join(bed.world.profiles, n)), v1, n);
    }
    // The good agent of the second batch was dispatched with its batch: it ran v2 to the end.
    const good = b2.find((n) => !failing.includes(n))!;
    // The rollout halted as the second failure was decided, maybe while it still activated.
    const goodEnd = await until(`${good} finished`, async () => {
      const again = (await adminApi(bed.server, 'GET', `/rollouts/${rolloutId}`)) as unknown as Rollout;
      const d = again.deployments.find((x) => x.agent === good)!;
      return d.state === 'running' || d.state === 'pending' ? undefined : d;
    });
    assert.equal(goodEnd.state, 'succeeded');
    assert.equal(await profileTarget(join(bed.world.profiles, good)), v2(good));
    // The third batch: cancelled without ever seeing v2.
    for (const n of b3) {
      assert.deepEqual([by.get(n)!.state, by.get(n)!.rolloutState], ['cancelled', 'cancelled'], n);
      assert.equal(by.get(n)!.reason, `rollout failed: ${staged.reason}`, n);
      assert.equal(await profileTarget(join(bed.world.profiles, n)), v1, n);
      assert.doesNotMatch(await readOr(record(n)), new RegExp(v2(n)), n);
    }
    // Nobody was reverted: halt leaves the switched agents where they are.
    const all = (await adminApi(bed.server, 'GET', '/deployments?limit=100')) as {
      deployments: Deployment[];
    };
    assert.deepEqual(
      all.deployments.filter((d) => d.kind === 'rollback'),
      [],
    );
  });
});

describe('a staged rollout whose failure threshold is met (onFailure: revert)', () => {
  const bed = useDeployTestbed();

  it('halts, then rolls every agent it switched back to v1 with rollback deployments', async () => {
    const { names, b1, b2, b3, failing, record, v1, v2, r, rolloutId, rollout } = await thresholdRollout(
      bed,
      'rv',
      'revert',
    );
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.equal(rollout.staged!.state, 'failed');
    assert.match(rollout.staged!.reason ?? '', /decided agents failed \(threshold: 2 once 4 are decided\)/);
    const switched = [...b1, ...b2.filter((n) => !failing.includes(n))].sort();
    // The rollback deployments: one per switched agent, to v1, in rollouts of their own.
    let rollbacks: Deployment[] = [];
    const deadline = Date.now() + 30_000;
    for (;;) {
      const all = (await adminApi(bed.server, 'GET', '/deployments?limit=100')) as {
        deployments: Deployment[];
      };
      rollbacks = all.deployments.filter((d) => d.kind === 'rollback');
      if (rollbacks.length === switched.length && rollbacks.every((d) => d.state === 'succeeded')) break;
      assert.ok(
        Date.now() < deadline,
        `rollbacks not done within 30 s: ${JSON.stringify(rollbacks.map((d) => [d.agent, d.state]))}`,
      );
      await new Promise((res) => setTimeout(res, 250));
    }
    assert.deepEqual(rollbacks.map((d) => d.agent).sort(), switched);
    for (const d of rollbacks) {
      assert.equal(d.storePath, v1, d.agent);
      assert.notEqual(d.rolloutId, rolloutId, d.agent);
    }
    // Every agent ends on v1: the switched ones by the revert, the failed ones by their own
    // rollback, the third batch because it never got v2.
    for (const n of names) assert.equal(await profileTarget(join(bed.world.profiles, n)), v1, n);
    for (const n of switched) assert.match(await readOr(record(n)), new RegExp(v2(n)), n);
    for (const n of b3) assert.doesNotMatch(await readOr(record(n)), new RegExp(v2(n)), n);
    // Prometheus sees the reverts, one per switched agent, apart from the agents' own rollbacks.
    const metrics = await fetch(`${bed.server.url}/metrics`, {
      headers: { Authorization: `Bearer ${bed.server.adminToken}` },
    }).then((res) => res.text());
    assert.match(
      metrics,
      new RegExp(`^cairn_rollbacks_total\\{reason="rollout-revert"\\} ${switched.length}$`, 'm'),
    );
  });
});
