import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { nixosPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { type DeployTestbed, useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { adminApi, cli } from '../helpers/server.ts';
import { until } from '../helpers/staged-rollout.ts';

interface Deployment {
  id: number;
  agent: string;
  state: string;
  reason: string | null;
  rolloutId: number;
  rolloutState?: string | null;
}
interface Rollout {
  deployments: Deployment[];
  staged: { state: string; reason: string | null; failed: number; deferred: number; decided: number } | null;
}

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

/**
 * Six agents on v1 (deployed at once); one of them, `away`, is then stopped and the test waits
 * until the server shows it offline. Its token and state dir are kept, to start it again.
 */
async function fleetWithOneAway(bed: DeployTestbed, prefix: string) {
  const names = Array.from({ length: 6 }, (_, i) => `${prefix}${i}`);
  const away = names[3]!;
  const record = join(bed.world.profiles, `${prefix}-record`);
  const paths = await bed.world.publish([
    nixosPackage(`${prefix}-v1-${RUN_TAG}`, record),
    nixosPackage(`${prefix}-v2-${RUN_TAG}`, record),
    nixosPackage(`${prefix}-bad-${RUN_TAG}`, record, { exit: 1 }),
  ]);
  const v1 = paths.get(`${prefix}-v1-${RUN_TAG}`)!;
  const v2 = paths.get(`${prefix}-v2-${RUN_TAG}`)!;
  const bad = paths.get(`${prefix}-bad-${RUN_TAG}`)!;
  const token = await bed.world.createAgent(away);
  const stateDir = await mkdtemp(join(tmpdir(), 'cairn-agent-away-'));
  const procs = new Map();
  for (const n of names) procs.set(n, await bed.agent(n, n === away ? { token, stateDir } : {}));
  const first = await bed.activate({ agents: Object.fromEntries(names.map((n) => [n, v1])) });
  assert.equal(first.code, 0, first.stdout + first.stderr);
  await procs.get(away).stop();
  await until(`${away} shown offline`, async () => {
    const a = (await adminApi(bed.server, 'GET', `/agents/${away}`)) as { online: boolean };
    return a.online ? undefined : true;
  });
  const comeBack = async () => {
    const agent = await bed.agent(away, { token, stateDir });
    await until(`${away} shown online`, async () => {
      const a = (await adminApi(bed.server, 'GET', `/agents/${away}`)) as { online: boolean };
      return a.online ? true : undefined;
    });
    return agent;
  };
  return { names, away, record, v1, v2, bad, comeBack };
}

async function rolloutOf(bed: DeployTestbed, agent: string): Promise<{ id: number; rollout: Rollout }> {
  const list = (await adminApi(bed.server, 'GET', `/deployments?agent=${agent}&limit=1`)) as {
    deployments: Deployment[];
  };
  const id = list.deployments[0]!.rolloutId;
  return { id, rollout: (await adminApi(bed.server, 'GET', `/rollouts/${id}`)) as unknown as Rollout };
}

/** `cairn deploy activate` with a timeout, so that a rollout the CLI cannot see the end of fails the test. */
async function activate(bed: DeployTestbed, body: object) {
  const file = await writeDeployJson(bed.world.profiles, body);
  return await cli(['deploy', 'activate', file, '--timeout', '20s'], bed.world.env);
}

describe('a staged rollout with an agent offline when its batch opens (offline: defer)', () => {
  const bed = useDeployTestbed();

  let exit: { code: number; out: string } | undefined;

  it('defers it without counting it failed, succeeds, and gives it the closure when it returns', async () => {
    const { names, away, v1, v2, comeBack } = await fleetWithOneAway(bed, 'of');
    const r = await activate(bed, {
      agents: Object.fromEntries(names.map((n) => [n, v2])),
      rollout: { batches: ['50%', '100%'], bake: '0' },
    });
    exit = { code: r.code, out: r.stdout + r.stderr };
    const { id, rollout } = await until('the rollout over', async () => {
      const found = await rolloutOf(bed, away);
      return found.rollout.staged!.state === 'running' ? undefined : found;
    });
    assert.equal(rollout.staged!.state, 'succeeded', rollout.staged!.reason ?? '');
    assert.equal(rollout.staged!.reason, null);
    assert.equal(rollout.staged!.failed, 0);
    assert.equal(rollout.staged!.deferred, 1);
    assert.equal(rollout.staged!.decided, 5);
    for (const d of rollout.deployments) {
      if (d.agent === away) assert.deepEqual([d.state, d.rolloutState], ['pending', 'deferred']);
      else assert.deepEqual([d.state, d.rolloutState], ['succeeded', 'succeeded'], d.agent);
    }
    for (const n of names) {
      assert.equal(await profileTarget(join(bed.world.profiles, n)), n === away ? v1 : v2, n);
    }
    // Back online: it gets v2 from the rollout that succeeded.
    await comeBack();
    const mine = await until(`${away} switched to v2`, async () => {
      const again = (await adminApi(bed.server, 'GET', `/rollouts/${id}`)) as unknown as Rollout;
      const d = again.deployments.find((x) => x.agent === away)!;
      return d.state === 'succeeded' ? again : undefined;
    });
    assert.equal(await profileTarget(join(bed.world.profiles, away)), v2);
    // Outside the bake, it shows as succeeded, not as baking for good.
    assert.equal(mine.deployments.find((x) => x.agent === away)!.rolloutState, 'succeeded');
    // The rollout stays succeeded; the returning agent is outside its threshold counts.
    assert.equal(mine.staged!.state, 'succeeded');
    assert.equal(mine.staged!.failed, 0);
    assert.equal(mine.staged!.decided, 5);
  });

  // The deferred deployment stays pending until its agent returns; the CLI follows the rollout,
  // which is over, not every deployment.
  it('cairn deploy activate exits 0 on that rollout', () => {
    assert.ok(exit, 'the rollout above ran');
    assert.equal(exit.code, 0, exit.out);
  });
});

describe('a staged rollout that fails with an agent deferred (offline: defer)', () => {
  const bed = useDeployTestbed();

  it('cancels the deferred deployment: the agent that returns keeps what it ran', async () => {
    const { names, away, record, v1, v2, bad, comeBack } = await fleetWithOneAway(bed, 'od');
    // Two canaries: the one away (deferred when the canary batch opens) and one that fails.
    const r = await activate(bed, {
      agents: Object.fromEntries(names.map((n) => [n, n === 'od0' ? bad : v2])),
      rollout: { canary: [away, 'od0'], batches: ['100%'], bake: '0' },
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const { id, rollout } = await rolloutOf(bed, away);
    assert.equal(rollout.staged!.state, 'failed');
    assert.match(rollout.staged!.reason ?? '', /^canary od0 failed/);
    const mine = rollout.deployments.find((d) => d.agent === away)!;
    assert.deepEqual([mine.state, mine.rolloutState], ['cancelled', 'cancelled']);
    assert.match(mine.reason ?? '', /^rollout failed: canary od0 failed/);
    await comeBack();
    // Give the server time to dispatch it wrongly: several engine ticks after the agent is online.
    await sleep(3000);
    const again = (await adminApi(bed.server, 'GET', `/rollouts/${id}`)) as unknown as Rollout;
    assert.equal(again.staged!.state, 'failed');
    assert.deepEqual(
      again.deployments.filter((d) => d.agent === away).map((d) => d.state),
      ['cancelled'],
    );
    assert.equal(await profileTarget(join(bed.world.profiles, away)), v1);
    for (const n of names) assert.equal(await profileTarget(join(bed.world.profiles, n)), v1, n);
    assert.doesNotMatch(await readFile(record, 'utf8'), new RegExp(v2));
  });
});
