import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { nixosPackage, profileTarget, writeDeployJson } from '../helpers/deploy-fixtures.ts';
import { useDeployTestbed } from '../helpers/deploy-testbed.ts';
import { RUN_TAG } from '../helpers/nix.ts';
import { cli } from '../helpers/server.ts';
import { getRollout, operate, sleep, slowNixosPackage, waitRollout } from '../helpers/staged-rollout.ts';

const NAMES = ['g1', 'g2', 'g3', 'g4', 'g5', 'g6'];

describe('staged rollout gates, pause and deadlines', () => {
  const bed = useDeployTestbed();
  const record = () => join(bed.world.profiles, 'gates-record');
  const profiles = async () =>
    Object.fromEntries(
      await Promise.all(
        NAMES.map(async (n) => [n, await profileTarget(join(bed.world.profiles, n))] as const),
      ),
    );
  /** Starts a rollout with `cairn deploy activate --async` and returns its id. */
  const activateAsync = async (body: object): Promise<number> => {
    const file = await writeDeployJson(bed.world.profiles, body);
    const r = await cli(['deploy', 'activate', file, '--async'], bed.world.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return Number(r.stdout.trim());
  };
  const everyone = (path: string) => Object.fromEntries(NAMES.map((n) => [n, path]));
  before(async () => {
    for (const n of NAMES) await bed.agent(n);
  });

  it('holds the last batch at a manual gate until promote, then switches it', async () => {
    const paths = await bed.world.publish([
      nixosPackage(`gates-v1-${RUN_TAG}`, record()),
      nixosPackage(`gates-v2-${RUN_TAG}`, record()),
    ]);
    const v1 = paths.get(`gates-v1-${RUN_TAG}`)!;
    const v2 = paths.get(`gates-v2-${RUN_TAG}`)!;
    const first = await bed.activate({ agents: everyone(v1) });
    assert.equal(first.code, 0, first.stdout + first.stderr);

    const id = await activateAsync({
      agents: everyone(v2),
      rollout: { batches: ['50%', { size: '100%', advance: 'manual' }], bake: '0' },
    });
    await waitRollout(bed.server, id, (r) => /promote/.test(r.staged.waiting ?? ''));
    // The gate holds for a while: the second half stays pending and on v1.
    await sleep(3000);
    const held = await getRollout(bed.server, id);
    assert.equal(held.staged.state, 'running');
    assert.equal(held.staged.batch, 0);
    assert.match(
      held.staged.waiting!,
      new RegExp(`batch 2 of 2 \\(100%\\) waits for promote.*cairn deploy promote ${id}`),
    );
    const gated = held.deployments.filter((d) => d.batch === 1).map((d) => d.agent);
    assert.equal(gated.length, 3);
    const now = await profiles();
    for (const d of held.deployments) {
      if (d.batch === 0) {
        assert.equal(d.rolloutState, 'succeeded', d.agent);
        assert.equal(now[d.agent], v2, d.agent);
      } else {
        assert.deepEqual([d.state, d.rolloutState], ['pending', 'pending'], d.agent);
        assert.equal(now[d.agent], v1, d.agent);
      }
    }

    const promoted = await operate(bed.server, id, 'promote');
    assert.equal(promoted.status, 200, JSON.stringify(promoted.body));
    const done = await waitRollout(bed.server, id, (r) => r.staged.state === 'succeeded');
    assert.deepEqual(
      done.deployments.map((d) => [d.agent, d.state, d.rolloutState]),
      done.deployments.map((d) => [d.agent, 'succeeded', 'succeeded']),
    );
    assert.deepEqual(await profiles(), everyone(v2));
    // Nothing is left to promote.
    assert.equal((await operate(bed.server, id, 'promote')).status, 409);
  });

  it('dispatches nothing while paused, even with the batch before decided; resume continues', async () => {
    const paths = await bed.world.publish([nixosPackage(`gates-v3-${RUN_TAG}`, record())]);
    const v3 = paths.get(`gates-v3-${RUN_TAG}`)!;
    const before = await profiles();
    const id = await activateAsync({
      agents: everyone(v3),
      rollout: { canary: ['g1'], batches: ['100%'], bake: '0', batchDeadline: '4s' },
    });
    const paused = await operate(bed.server, id, 'pause');
    assert.equal(paused.status, 200, JSON.stringify(paused.body));
    // The canary, dispatched before the pause, finishes and is decided while paused...
    await waitRollout(
      bed.server,
      id,
      (r) => r.deployments.find((d) => d.agent === 'g1')!.rolloutState === 'succeeded',
    );
    // ...but for longer than the batch deadline nobody else gets anything.
    await sleep(5000);
    const held = await getRollout(bed.server, id);
    assert.equal(held.staged.state, 'paused');
    assert.match(held.staged.waiting!, /paused/);
    assert.match(held.staged.reason!, /paused by/);
    const now = await profiles();
    for (const d of held.deployments.filter((x) => x.agent !== 'g1')) {
      assert.deepEqual([d.state, d.rolloutState], ['pending', 'pending'], d.agent);
      assert.equal(now[d.agent], before[d.agent], d.agent);
    }
    assert.equal(now.g1, v3);
    // Promote is refused while paused.
    assert.equal((await operate(bed.server, id, 'promote')).status, 409);

    assert.equal((await operate(bed.server, id, 'resume')).status, 200);
    const done = await waitRollout(bed.server, id, (r) => r.staged.state === 'succeeded');
    assert.equal(done.staged.reason, null);
    assert.deepEqual(await profiles(), everyone(v3));
  });

  it('stops the batch deadline while paused: a pause longer than the deadline does not fail the batch', async () => {
    const paths = await bed.world.publish([
      slowNixosPackage(`gates-slow-${RUN_TAG}`, record(), 9),
      nixosPackage(`gates-v4-${RUN_TAG}`, record()),
    ]);
    const slow = paths.get(`gates-slow-${RUN_TAG}`)!;
    const v4 = paths.get(`gates-v4-${RUN_TAG}`)!;
    // The canary's switch takes 9 s; the deadline is 6 s, and the pause 8 s of those.
    const id = await activateAsync({
      agents: { ...everyone(v4), g1: slow },
      rollout: { canary: ['g1'], batches: ['100%'], bake: '0', batchDeadline: '6s' },
    });
    assert.equal((await operate(bed.server, id, 'pause')).status, 200);
    await sleep(8000);
    const held = await getRollout(bed.server, id);
    assert.equal(held.staged.state, 'paused', JSON.stringify(held.staged));
    assert.equal((await operate(bed.server, id, 'resume')).status, 200);
    const done = await waitRollout(
      bed.server,
      id,
      (r) => !['running', 'paused', 'pending'].includes(r.staged.state),
    );
    assert.equal(done.staged.state, 'succeeded', JSON.stringify(done.staged));
    assert.deepEqual(await profiles(), { ...everyone(v4), g1: slow });
  });

  it('fails the rollout when a batch outlives its deadline, naming it', async () => {
    const paths = await bed.world.publish([
      slowNixosPackage(`gates-slow2-${RUN_TAG}`, record(), 8),
      nixosPackage(`gates-v5-${RUN_TAG}`, record()),
    ]);
    const slow = paths.get(`gates-slow2-${RUN_TAG}`)!;
    const v5 = paths.get(`gates-v5-${RUN_TAG}`)!;
    const before = await profiles();
    const started = Date.now();
    const id = await activateAsync({
      agents: { ...everyone(v5), g1: slow },
      rollout: { canary: ['g1'], batches: ['100%'], bake: '0', batchDeadline: '3s' },
    });
    const failed = await waitRollout(
      bed.server,
      id,
      (r) => r.staged.state !== 'running' && r.staged.state !== 'pending',
    );
    const took = Date.now() - started;
    assert.equal(failed.staged.state, 'failed');
    assert.match(failed.staged.reason!, /^batch 1 \(canary\) not done within 3s: 1 activating \(g1\)/);
    assert.ok(took >= 3000 && took < 8000, `failed after ${took} ms`);
    // Nobody after the canary got anything.
    const now = await profiles();
    for (const d of failed.deployments.filter((x) => x.agent !== 'g1')) {
      assert.deepEqual([d.state, d.rolloutState], ['cancelled', 'cancelled'], d.agent);
      assert.equal(now[d.agent], before[d.agent], d.agent);
      assert.match(d.reason!, /rollout failed: batch 1 \(canary\) not done within 3s/);
    }
    // The canary, already switching, finishes on its own (halt stops dispatching; it reverts nothing).
    const end = await waitRollout(
      bed.server,
      id,
      (r) =>
        r.deployments.find((d) => d.agent === 'g1')!.state !== 'running' &&
        r.deployments.find((d) => d.agent === 'g1')!.state !== 'pending',
      20_000,
    );
    assert.equal(end.staged.state, 'failed');
  });
});
